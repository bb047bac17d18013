"""Trades (every one) and books (at a cadence) from Redis Streams, resumable from a saved position.

With publisher.streams on, each entry holds the payload (field d, the same JSON as the
channel's) and its number in the stream (field n: 1, 2, 3, ...). A reader remembers, per
stream, the id and number of the last entry it took (`positions`); a reader started again
from them, seconds or hours later, goes on with the next entry: nothing is lost while it is
still within the stream's MAXLEN bound, and what was trimmed before it came back is reported
exactly (a "gap" event: `missed` entries). Entries are at-least-once: a trade in a round trip
Redis did not confirm is added again; the copy is recognised (timestamp and trade id) and
skipped.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import orjson
import redis

from mdpipe.redis_consumer.connect import Client, connect, resolve

log = logging.getLogger("mdpipe.redis_consumer")


@dataclass(frozen=True)
class Position:
    """Where a reader stands in one stream: the last entry's id and number (0-0, 0: the start)."""

    id: str = "0-0"
    n: int = 0


@dataclass
class StreamEvent:
    """kind "entry" (data is the payload), "gap" (`missed` entries trimmed before they were
    read), or "reset" (the stream started over: Redis and the publisher both restarted)."""

    kind: str
    venue: str
    symbol: str
    id: str = ""
    n: int = 0
    data: dict | None = None
    missed: int = 0


class StreamReader:
    """Reads the trades or books streams of some symbols; `read()` returns StreamEvents.

    start: per symbol spec, the Position to go on from (from `positions` of an earlier
    reader); symbols not in it start at the newest entry ("$"), or at the oldest one still
    kept with from_oldest=True. wait: seconds to wait for a publisher starting alongside to
    list the symbols.
    """

    def __init__(
        self,
        url: str,
        symbols: list[str],
        *,
        kind: str = "trades",
        password: str | None = None,
        start: dict[str, Position] | None = None,
        from_oldest: bool = False,
        reconnect_max: float = 5.0,
        wait: float = 0.0,
    ) -> None:
        if kind not in ("trades", "books"):
            raise ValueError(f"kind must be 'trades' or 'books', not {kind!r}")
        self.url, self.password = url, password
        self.kind = kind
        self.reconnect_max = reconnect_max
        self.client: Client = connect(url, password)
        names = resolve(self.client, url, symbols, wait)
        self.cluster = any(n.cluster for n in names)
        self.streams: dict[str, tuple[str, str, str]] = {}  # stream -> (spec, venue, symbol)
        self.pos: dict[str, Position] = {}
        start = start or {}
        for spec, n in zip(symbols, names, strict=True):
            stream = n.trades_stream if kind == "trades" else n.orderbook_stream
            self.streams[stream] = (spec, n.venue, n.symbol)
            if spec in start:
                self.pos[stream] = start[spec]
            elif from_oldest:
                self.pos[stream] = Position()
            else:
                self.pos[stream] = self._newest(stream)
        self.last_trade: dict[str, tuple[int, int]] = {}
        self.missed = self.duplicates = self.reconnects = 0
        self.down_since: float | None = None
        self.delay = 0.1

    def _newest(self, stream: str) -> Position:
        rows = self.client.xrevrange(stream, "+", "-", count=1)
        if not rows:
            return Position()
        entry_id, fields = rows[0]
        return Position(entry_id.decode(), int(fields[b"n"]))

    @property
    def positions(self) -> dict[str, Position]:
        """Per symbol spec, where this reader stands: save it to resume later."""
        return {self.streams[s][0]: p for s, p in self.pos.items()}

    def read(self, timeout: float = 1.0, count: int = 1000) -> list[StreamEvent]:
        """The entries (and gaps) available within `timeout` seconds, in order per stream."""
        if self.down_since is not None:
            time.sleep(min(self.delay * random.uniform(0.8, 1.2), timeout))
            self.delay = min(self.delay * 2, self.reconnect_max)
        try:
            replies = self._xread(timeout, count)
        except (redis.RedisError, OSError) as exc:
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("lost Redis at %s (%s); reconnecting", self.url, exc)
            return []
        if self.down_since is not None:
            self.down_since = None
            self.delay = 0.1
            self.reconnects += 1
        out: list[StreamEvent] = []
        for stream, entries in replies:
            self._take(stream.decode() if isinstance(stream, bytes) else stream, entries, out)
        return out

    def _xread(self, timeout: float, count: int) -> list:
        ids = {s: p.id for s, p in self.pos.items()}
        if not self.cluster:
            return self.client.xread(ids, count=count, block=max(1, int(timeout * 1000))) or []
        # Streams of different slots cannot share one XREAD: poll each without blocking.
        end = time.monotonic() + timeout
        while True:
            out = []
            for stream, last in ids.items():
                got = self.client.xread({stream: last}, count=count)
                out += got or []
            if out or time.monotonic() >= end:
                return out
            time.sleep(0.005)

    def _take(self, stream: str, entries: list, out: list[StreamEvent]) -> None:
        _, venue, symbol = self.streams[stream]
        pos = self.pos[stream]
        for entry_id, fields in entries:
            n = int(fields[b"n"])
            eid = entry_id.decode()
            if pos.n and n <= pos.n:
                out.append(StreamEvent("reset", venue, symbol, eid, n))
            elif pos.n and n > pos.n + 1:
                missed = n - pos.n - 1
                self.missed += missed
                out.append(StreamEvent("gap", venue, symbol, eid, n, None, missed))
            pos = Position(eid, n)
            data = orjson.loads(fields[b"d"])
            if self.kind == "trades" and self._repeat(stream, data):
                continue
            out.append(StreamEvent("entry", venue, symbol, eid, n, data))
        self.pos[stream] = pos

    def _repeat(self, stream: str, trade: dict) -> bool:
        mark = (trade["timestamp"], trade["trade_id"])
        last = self.last_trade.get(stream)
        if last is not None and mark <= last:
            self.duplicates += 1
            return True
        self.last_trade[stream] = mark
        return False

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
