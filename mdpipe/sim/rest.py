"""REST depth endpoint rules: paths, parameter validation, Binance error bodies, weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs

import orjson

from mdpipe.sim.faults import Fault
from mdpipe.sim.instruments import FUTURES

FUTURES_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
SPOT_MAX_LIMIT = 5000
DEPTH_PATH = {FUTURES: "/fapi/v1/depth", "spot": "/api/v3/depth"}
PING_PATH = {FUTURES: "/fapi/v1/ping", "spot": "/api/v3/ping"}
TIME_PATH = {FUTURES: "/fapi/v1/time", "spot": "/api/v3/time"}
INFO_PATH = {FUTURES: "/fapi/v1/exchangeInfo", "spot": "/api/v3/exchangeInfo"}
JSON_TYPE = "application/json;charset=UTF-8"


@dataclass
class Reply:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


def error(status: int, code: int, msg: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    """A Binance-style error body: {"code": negative int, "msg": text}."""
    return Reply(status, orjson.dumps({"code": code, "msg": msg}), headers or [])


def depth_params(market: str, query: str, symbols: set[str]) -> tuple[str, int] | Reply:
    """(symbol, limit) of a depth request, or the error the exchange would answer."""
    params = parse_qs(query, keep_blank_values=True)
    symbol = params.get("symbol", [""])[0]
    if not symbol:
        return error(
            400,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        )
    if symbol not in symbols:
        return error(400, -1121, "Invalid symbol.")
    raw_limit = params.get("limit", [""])[0]
    if not raw_limit:
        return symbol, 500 if market == FUTURES else 100
    if not raw_limit.isdigit() or len(raw_limit) > 20:
        return error(
            400,
            -1100,
            "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
        )
    limit = int(raw_limit)
    if market == FUTURES:
        if limit not in FUTURES_LIMITS:
            return error(400, -1130, "Data sent for parameter 'limit' is not valid.")
        return symbol, limit
    if limit < 1:
        return error(400, -1130, "Data sent for parameter 'limit' is not valid.")
    # Spot truncates larger limits to 5000 instead of rejecting them.
    return symbol, min(limit, SPOT_MAX_LIMIT)


def depth_weight(market: str, limit: int) -> int:
    """Request weight of a depth call, as the exchange counts it."""
    if market == FUTURES:
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def fault_reply(fault: Fault, now_ms: int) -> Reply:
    """What a REST fault answers instead of the snapshot (not rest_slow, which only delays)."""
    retry = str(fault.retry_after or (60 if fault.kind == "rest_429" else 120))
    if fault.kind == "rest_429":
        return error(
            429,
            -1003,
            "Too many requests; current limit of IP(127.0.0.1) is 2400 requests per minute. "
            "Please use the websocket for live updates to avoid polling the API.",
            [("Retry-After", retry)],
        )
    if fault.kind == "rest_418":
        until = now_ms + int(retry) * 1000
        return error(
            418,
            -1003,
            f"Way too many requests; IP(127.0.0.1) banned until {until}. "
            "Please use the websocket for live updates to avoid bans.",
            [("Retry-After", retry)],
        )
    if fault.kind == "rest_451":
        return error(
            451,
            0,
            "Service unavailable from a restricted location according to 'b. Eligibility' "
            "in https://www.binance.com/en/terms. Please contact customer service if you "
            "believe you received this message in error.",
        )
    return error(500, -1000, "An unknown error occurred while processing the request.")


def unavailable(reason: str) -> Reply:
    """503: no snapshot can be served (--no-snapshot, or a tape snapshot not reached in time)."""
    return error(503, -1008, reason)
