"""Binance WebSocket control requests: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, properties."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from mdpipe.sim.limits import MAX_SUBSCRIBE_PARAMS
from mdpipe.sim.streams import MAX_STREAMS

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


@dataclass
class ControlResult:
    """What one request changes and what to answer."""

    reply: bytes
    subscribe: list[str] = field(default_factory=list)
    unsubscribe: list[str] = field(default_factory=list)
    combined: bool | None = None  # new value of the `combined` property, if set


def _err(code: int, msg: str, req_id: Any = None, with_id: bool = True) -> ControlResult:
    body: dict[str, Any] = {"code": code, "msg": msg}
    if with_id:
        body["id"] = req_id
    return ControlResult(orjson.dumps(body))


def _valid_id(req_id: Any) -> bool:
    if isinstance(req_id, bool):
        return False
    if isinstance(req_id, int):
        return req_id >= 0
    return req_id is None or (isinstance(req_id, str) and 0 < len(req_id) <= 36)


def handle_control(message: str | bytes, subs: list[str], combined: bool) -> ControlResult:
    """Answer one client request the way the exchange does, given its current subscriptions."""
    try:
        request = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        return _err(3, f"Invalid JSON: {exc}", with_id=False)
    if not isinstance(request, dict):
        return _err(3, "Invalid JSON: expected an object", with_id=False)
    req_id = request.get("id")
    if not _valid_id(req_id):
        return _err(2, "Invalid request: request ID must be an unsigned integer", with_id=False)
    method = request.get("method")
    if method is None:
        return _err(2, "Invalid request: missing field `method`", req_id)
    if method not in METHODS:
        expected = ", ".join(f"`{m}`" for m in METHODS)
        return _err(
            2, f"Invalid request: unknown variant `{method}`, expected one of {expected}", req_id
        )
    params = request.get("params", [])
    if not isinstance(params, list):
        return _err(2, "Invalid request: params must be an array", req_id)
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not all(isinstance(p, str) and p for p in params):
            return _err(2, "Invalid request: stream names must be non-empty strings", req_id)
        if len(params) > MAX_SUBSCRIBE_PARAMS:
            return _err(
                2, f"Invalid request: too many parameters (at most {MAX_SUBSCRIBE_PARAMS})", req_id
            )
        ok = orjson.dumps({"result": None, "id": req_id})
        if method == "SUBSCRIBE":
            new = [p for p in dict.fromkeys(params) if p not in subs]
            if len(subs) + len(new) > MAX_STREAMS:
                return _err(2, "Invalid request: too many parameters", req_id)
            return ControlResult(ok, subscribe=new)
        return ControlResult(ok, unsubscribe=[p for p in dict.fromkeys(params) if p in subs])
    if method == "LIST_SUBSCRIPTIONS":
        return ControlResult(orjson.dumps({"result": list(subs), "id": req_id}))
    if not params or not isinstance(params[0], str):
        return _err(2, "Invalid request: property name must be a string", req_id)
    if params[0] != "combined":
        return _err(0, "Unknown property", req_id)
    if method == "GET_PROPERTY":
        return ControlResult(orjson.dumps({"result": combined, "id": req_id}))
    if len(params) != 2 or not isinstance(params[1], bool):
        return _err(1, "Invalid value type: expected Boolean", req_id)
    return ControlResult(orjson.dumps({"result": None, "id": req_id}), combined=params[1])
