"""The server-side connection: websockets' own, plus small request bodies for the control API."""

from __future__ import annotations

import base64
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from mdpipe.sim.streams import WsRoute

_METHOD_HEADER = "X-Mdpipe-Sim-Method"
_BODY_HEADER = "X-Mdpipe-Sim-Body"
_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024


def request_method(request: Request) -> str:
    """The HTTP method the client really sent."""
    return request.headers.get(_METHOD_HEADER, request.method)


def request_body(request: Request) -> bytes:
    """The request body the client sent (empty for GET)."""
    return base64.b64decode(request.headers.get(_BODY_HEADER, ""))


def _rewrite_request(head: bytes, body: bytes) -> bytes:
    """Turn `METHOD target` + body into a body-less GET carrying both in private headers."""
    lines = head.split(b"\r\n")
    method, target, proto = lines[0].split(b" ", 2)
    dropped = (b"content-length", b"transfer-encoding")
    kept = [h for h in lines[1:] if h.partition(b":")[0].strip().lower() not in dropped]
    kept.append(_METHOD_HEADER.encode() + b": " + method)
    kept.append(_BODY_HEADER.encode() + b": " + base64.b64encode(body))
    return b"\r\n".join([b"GET " + target + b" " + proto, *kept]) + b"\r\n\r\n"


def _content_length(head: bytes) -> int:
    for header in head.split(b"\r\n")[1:]:
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            return int(value) if value.isdigit() else 0
    return 0


class SimConnection(ServerConnection):
    """websockets' server connection, also accepting small request bodies (POST /_sim/fault).

    websockets parses only body-less requests, so a non-GET request's body is moved into
    two private headers before websockets sees it; request_method/request_body read them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sim_route: WsRoute | None = None  # set by process_request for WebSocket paths
        self._head: bytearray | None = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            super().data_received(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_HEAD:
                self._pass_through()
            return
        if self._head.startswith(b"GET "):
            self._pass_through()
            return
        head = bytes(self._head[:end])
        length = min(_content_length(head), _MAX_BODY)
        body = bytes(self._head[end + 4 : end + 4 + length])
        if len(body) < length:
            return
        self._head = None
        super().data_received(_rewrite_request(head, body))

    def _pass_through(self) -> None:
        data = bytes(self._head or b"")
        self._head = None
        super().data_received(data)
