"""One combined-stream WebSocket connection: handshake off-thread, frames read on the loop.

websocket-client does the handshake and the (rare) sends; frames are read by
`mdpipe.ingest.wsframes` from the socket set non-blocking, so a half-received frame never
blocks the loop: its rest is read when the selector reports it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass

import websocket

from mdpipe.ingest.backoff import Backoff
from mdpipe.ingest.inbox import Inbox
from mdpipe.ingest.wsframes import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameReader,
    ProtocolError,
)

CONNECT_TIMEOUT = 10.0
# A send (subscribe requests, pings, pongs) waits at most this long for room in the socket.
SEND_TIMEOUT = 5.0

# Outcomes of Connection.read(), besides the frame bytes themselves.
CONTROL = None  # a ping (already answered) or pong: the connection is alive, nothing to parse
NOTHING = object()  # no whole frame received yet: wait for the selector


class ConnectionLost(Exception):
    """The peer closed the connection or the socket failed."""


@dataclass
class Connected:
    """A finished handshake (ws is None and error set when it failed)."""

    name: str
    attempt: int
    ws: websocket.WebSocket | None
    error: str


class Connection:
    """A route's WebSocket (e.g. futures `/public` or `/market`) and its liveness bookkeeping."""

    def __init__(
        self,
        name: str,
        url: str,
        streams: dict[tuple[str, str], str],
        backoff: Backoff,
    ) -> None:
        self.name = name
        self.url = url
        self.streams = streams  # (SYMBOL, "depth" | "trade") -> stream name
        self.depth_symbols = [sym for sym, kind in streams if kind == "depth"]
        self.backoff = backoff
        self.ws: websocket.WebSocket | None = None
        self.sock: socket.socket | None = None
        self.reader: FrameReader | None = None
        self.connecting = False
        self.attempt = 0  # bumped per handshake started; stale handshakes are discarded
        self.next_attempt = 0.0  # monotonic time of the next handshake
        self.connected_at = 0.0
        self.last_frame = 0.0  # monotonic; brought up to date by note_frames(), not per frame
        self.frames_noted = 0  # `frames` when note_frames() last ran
        self.last_ping = 0.0  # monotonic time the last keepalive was sent (venues that ping)
        self.frames = 0  # data frames on the current connection
        self.unseen: set[tuple[str, str]] = set()  # streams silent since this connection began
        self.faulted: set[tuple[str, str]] = set()  # streams already reported as never delivering
        # Make-before-break rollover (see hand_over). On a route: the old socket still carrying
        # its streams, and the streams this connection has caught up on. On that old socket:
        # the route it hands over to, and the streams it delivered while both were open.
        self.retiring: Connection | None = None
        self.caught_up: set[tuple[str, str]] = set()
        self.successor: Connection | None = None
        self.delivered: set[tuple[str, str]] = set()
        # After the old socket closed: until then (monotonic), frames it delivered first may
        # still arrive here, and this connection may cut the depth stream differently.
        self.settle_until = 0.0

    @property
    def up(self) -> bool:
        return self.ws is not None

    def start_connect(self, inbox: Inbox) -> None:
        """Begin a handshake on a helper thread; its Connected result arrives in the inbox."""
        self.attempt += 1
        self.connecting = True
        attempt, url, name = self.attempt, self.url, self.name

        def handshake() -> None:
            try:
                ws = websocket.create_connection(
                    url,
                    timeout=CONNECT_TIMEOUT,
                    skip_utf8_validation=True,  # orjson validates while parsing
                    enable_multithread=False,
                    sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
                )
                ws.settimeout(SEND_TIMEOUT)
                inbox.post(Connected(name, attempt, ws, ""))
            except Exception as exc:  # any handshake failure is retried with backoff
                inbox.post(Connected(name, attempt, None, f"{type(exc).__name__}: {exc}"))

        threading.Thread(target=handshake, name=f"connect-{name}", daemon=True).start()

    def attach(self, ws: websocket.WebSocket, now: float) -> None:
        """Adopt a finished handshake."""
        self.connecting = False
        self.ws = ws
        self.sock = ws.sock
        self.sock.settimeout(0.0)  # reads never wait; send() waits up to SEND_TIMEOUT
        self.reader = FrameReader(self.sock)
        self.connected_at = now
        self.last_frame = now
        self.frames = self.frames_noted = 0
        self.unseen = set(self.streams)
        self.faulted = set()
        self.caught_up = set()

    def hand_over(self) -> Connection:
        """Move the open socket to a retiring twin that keeps delivering while this route
        opens its replacement; returns the twin."""
        old = Connection(f"{self.name}~old", self.url, self.streams, self.backoff)
        old.ws, old.sock, old.reader = self.ws, self.sock, self.reader
        old.connected_at, old.last_frame, old.frames, old.frames_noted = (
            self.connected_at,
            self.last_frame,
            self.frames,
            self.frames_noted,
        )
        old.successor = self
        self.ws = self.sock = self.reader = None
        self.retiring = old
        self.connecting = False
        return old

    def note_frames(self, now: float) -> None:
        """Move the silence clock (`last_frame`) to `now` if data frames came since the last
        call: housekeeping calls it every tick, so the hot path reads no clock for it."""
        if self.frames != self.frames_noted:
            self.frames_noted = self.frames
            self.last_frame = now

    def fill(self) -> None:
        """Take what the socket holds (the selector reported it readable); ConnectionLost if
        the socket failed. A close by the peer is reported by read() after the frames before it."""
        try:
            self.reader.fill()
        except OSError as exc:
            raise ConnectionLost(f"{type(exc).__name__}: {exc}") from None

    def read(self) -> bytes | object:
        """The next data frame's payload, CONTROL for a ping/pong (pings are answered here), or
        NOTHING when no whole frame is buffered (TLS bytes already decrypted are taken first)."""
        reader = self.reader
        try:
            found = reader.next()
            while found is None:
                if reader.eof:
                    raise ConnectionLost("the server closed the connection")
                if not (reader.pending() and reader.fill()):
                    return NOTHING
                found = reader.next()
        except ProtocolError as exc:
            raise ConnectionLost(f"WebSocketProtocolException: {exc}") from None
        except OSError as exc:
            raise ConnectionLost(f"{type(exc).__name__}: {exc}") from None
        op, payload = found
        if op in (OP_TEXT, OP_BINARY):
            return payload
        if op == OP_PING:
            self._send(payload, websocket.ABNF.OPCODE_PONG)
        elif op == OP_CLOSE:
            with contextlib.suppress(Exception):
                self._send(b"\x03\xe8", websocket.ABNF.OPCODE_CLOSE)  # 1000: normal closure
            raise ConnectionLost(f"closed by the server ({_close_reason(payload)})")
        return CONTROL

    def send(self, payload: bytes) -> None:
        """Send one text frame (a subscribe request, a ping); ConnectionLost if the socket failed."""
        self._send(payload, websocket.ABNF.OPCODE_TEXT)

    def _send(self, payload: bytes, opcode: int) -> None:
        """Send one frame, waiting up to SEND_TIMEOUT for room (reads stay non-blocking)."""
        try:
            sock = self.sock
            sock.settimeout(SEND_TIMEOUT)
            try:
                self.ws.send(payload, opcode)
            finally:
                sock.settimeout(0.0)
        except (websocket.WebSocketException, OSError, AttributeError) as exc:
            raise ConnectionLost(f"{type(exc).__name__}: {exc}") from None

    def drop(self) -> None:
        """Close the socket at once (no close handshake: the peer may be gone)."""
        ws = self.ws
        self.ws = None
        self.sock = None
        self.reader = None
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.shutdown()

    def close(self) -> None:
        """Polite close on shutdown: send a close frame, do not wait for the answer."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self._send(b"\x03\xe8", websocket.ABNF.OPCODE_CLOSE)  # 1000: normal closure
        self.drop()

    def schedule_retry(self, now: float) -> float:
        """Plan the next handshake after a backoff delay; returns the delay."""
        self.connecting = False
        delay = self.backoff.next_delay()
        self.next_attempt = now + delay
        return delay


def _close_reason(data: bytes) -> str:
    if len(data) >= 2:
        code = int.from_bytes(data[:2], "big")
        reason = data[2:].decode("utf-8", "replace")
        return f"code {code}{': ' + reason if reason else ''}"
    return "no code"
