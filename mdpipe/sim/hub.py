"""Fan-out of stream messages to subscribed connections, one socket write per client per tick."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import Counter
from typing import Any

from websockets.protocol import State

from mdpipe.sim.formats import envelope

log = logging.getLogger("mdpipe.sim")

_OPEN = State.OPEN


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class Client:
    """One WebSocket connection: its mode, its subscriptions, and its unsent frames."""

    __slots__ = ("conn", "combined", "route", "subs", "pending", "dirty", "id", "close_reason")

    def __init__(self, conn: Any, combined: bool, route: str, client_id: int) -> None:
        self.conn = conn
        self.combined = combined
        self.route = route
        self.subs: list[str] = []  # everything subscribed, delivered or not (LIST_SUBSCRIPTIONS)
        self.pending: list[bytes] = []
        self.dirty = False
        self.id = client_id
        self.close_reason: str | None = None  # set when the simulator ends the connection

    def is_open(self) -> bool:
        """Whether data frames may still be written to this connection."""
        return self.conn.protocol.state is _OPEN and not self.conn.transport.is_closing()


class Hub:
    """Routes each published message to the clients subscribed to its stream.

    Data frames are framed once per message and written straight to each client's
    transport, batched per event-loop tick; websockets itself still owns the handshake,
    pings, pongs and closing frames on the same transport, in order.
    """

    def __init__(self, max_send_buffer: int) -> None:
        self.max_send_buffer = max_send_buffer
        self.clients: set[Client] = set()
        self._by_stream: dict[str, set[Client]] = {}
        self._dirty: list[Client] = []
        self.sent_by_stream: Counter[str] = Counter()
        self.sent_total = 0
        self.bytes_total = 0
        self.slow_dropped = 0

    def add(self, client: Client) -> None:
        """Register a new connection."""
        self.clients.add(client)

    def remove(self, client: Client) -> None:
        """Forget a closed connection and all its deliveries."""
        self.clients.discard(client)
        for stream in client.subs:
            self.detach(client, stream)
        client.pending.clear()

    def attach(self, client: Client, stream: str) -> None:
        """Start delivering `stream` to `client`."""
        self._by_stream.setdefault(stream, set()).add(client)

    def detach(self, client: Client, stream: str) -> None:
        """Stop delivering `stream` to `client`."""
        subs = self._by_stream.get(stream)
        if subs is not None:
            subs.discard(client)
            if not subs:
                del self._by_stream[stream]

    def open_clients(self) -> list[Client]:
        """The connections still open, in the order they were accepted."""
        return sorted((c for c in self.clients if c.is_open()), key=lambda c: c.id)

    def receivers(self, stream: str) -> set[Client]:
        """The clients `stream` is delivered to."""
        return self._by_stream.get(stream, set())

    def wants(self, stream: str) -> bool:
        """Whether anyone receives `stream`; lets sources skip encoding unread streams."""
        return stream in self._by_stream

    def publish(self, stream: str, payload: bytes, wrapped: bytes | None = None) -> None:
        """Queue one message for every subscriber; `wrapped` is its envelope if already built."""
        subs = self._by_stream.get(stream)
        if not subs:
            return
        raw_frame = env_frame = None
        for client in subs:
            if client.combined:
                if env_frame is None:
                    env_frame = text_frame(wrapped or envelope(stream, payload))
                client.pending.append(env_frame)
            else:
                if raw_frame is None:
                    raw_frame = text_frame(payload)
                client.pending.append(raw_frame)
            if not client.dirty:
                client.dirty = True
                self._dirty.append(client)
        self.sent_by_stream[stream] += len(subs)
        self.sent_total += len(subs)

    def send(self, client: Client, message: bytes) -> None:
        """Queue one message for one client only (control replies, injected faults)."""
        client.pending.append(text_frame(message))
        if not client.dirty:
            client.dirty = True
            self._dirty.append(client)

    def flush(self) -> None:
        """Write every client's queued frames in one call; drop clients that fall too far behind."""
        for client in self._dirty:
            data = b"".join(client.pending)
            client.pending.clear()
            client.dirty = False
            if not client.is_open():
                continue
            transport = client.conn.transport
            transport.write(data)
            self.bytes_total += len(data)
            if transport.get_write_buffer_size() > self.max_send_buffer:
                # The exchange drops consumers that cannot keep up rather than slow down.
                log.warning(
                    "client %d is %d bytes behind: dropped", client.id, self.max_send_buffer
                )
                self.slow_dropped += 1
                client.close_reason = "slow_client"
                transport.abort()
        self._dirty.clear()

    async def drain(self) -> None:
        """Wait until no client's send buffer is above its high-water mark (for --max replay)."""
        waits = [c.conn.drain() for c in self.clients if c.conn.paused and c.is_open()]
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        """Counters for /_sim/stats."""
        return {
            "total": self.sent_total,
            "bytes": self.bytes_total,
            "by_stream": dict(self.sent_by_stream),
        }
