"""Books and trades from Redis pub/sub: snapshot, then stream, with exact gap reporting.

The procedure (any language can follow it; this module does):

1. SUBSCRIBE (SSUBSCRIBE on a cluster) to the symbols' channels and wait for every
   confirmation, so that Redis delivers everything published from then on.
2. GET each orderbook key: the newest book. The publisher SETs it before it publishes the
   books it covers, so the key is never behind the channel.
3. Follow the channels. Each book's `seq` (per symbol, per ingest writer) says what happened:
   the next number is continuity; a book not newer than the last one (seq and timestamp) was
   seen already (the snapshot, or the newest book re-sent after an outage) and is skipped; a
   jump of k+1 means k books were not received (conflated, dropped in an outage, or missed
   while this consumer reconnected); a smaller seq with a newer timestamp means the ingest
   writer restarted. Every book is a full snapshot: nothing needs repairing after a gap.
4. On a lost connection: reconnect with backoff and start again at 1; step 3 then reports
   what the outage cost. Trades published while disconnected are not replayed by pub/sub
   (use Streams for that): the reconnect is reported with its duration.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import redis

from mdpipe.redis_consumer.connect import Client, ConsumerError, connect, resolve
from mdpipe.redis_names import SymbolNames

log = logging.getLogger("mdpipe.redis_consumer")

SUBSCRIBE_TIMEOUT = 10.0


@dataclass
class Event:
    """One thing the subscriber saw.

    kind: "book", "trade", "market_data", "gap" (missed books), "reset" (writer restarted),
    "reconnected" (the connection was lost for `down_s` seconds and is back).
    """

    kind: str
    venue: str = ""
    symbol: str = ""
    data: dict | None = None
    snapshot: bool = False  # a book read from the key, not the channel
    missed: int = 0  # books not received (gap)
    seq_from: int = 0  # gap / reset: the last seq seen before
    seq_to: int = 0  # gap / reset: the seq that revealed it
    down_s: float = 0.0  # reconnected: seconds without a connection

    def describe(self) -> str:
        """One line for a gap, reset or reconnect."""
        if self.kind == "gap":
            return (
                f"{self.venue}:{self.symbol} GAP: seq {self.seq_from} -> {self.seq_to}, "
                f"{self.missed} book update(s) not received"
            )
        if self.kind == "reset":
            return (
                f"{self.venue}:{self.symbol} RESET: seq {self.seq_from} -> {self.seq_to}, "
                "the ingest writer restarted"
            )
        if self.kind == "reconnected":
            return f"RECONNECTED after {self.down_s:.1f} s; books resynced from their keys"
        return f"{self.kind} {self.venue}:{self.symbol}"


class BookSequence:
    """Sequence checking of one symbol's books: continuity, duplicates, gaps, restarts."""

    __slots__ = ("seq", "ts")

    def __init__(self) -> None:
        self.seq = -1
        self.ts = -1

    def check(self, seq: int, ts: int) -> tuple[str, int]:
        """("ok" | "dup" | "gap" | "reset", previous seq)."""
        prev, prev_ts = self.seq, self.ts
        if prev >= 0 and seq <= prev and ts <= prev_ts:
            return "dup", prev
        self.seq, self.ts = seq, ts
        if prev < 0 or seq == prev + 1:
            return "ok", prev
        return ("gap" if seq > prev else "reset"), prev


class Subscriber:
    """Follows symbols' books (and trades, tickers) over pub/sub; iterate it for Events.

    symbols: "BTCUSDT" or "venue:BTCUSDT" (the venue is needed only when a symbol name is on
    several venues); wait: seconds to wait for a publisher starting alongside to list them.
    Raises ConsumerError (one line) for an unreachable Redis or an unknown
    symbol; once running, connection losses are survived and reported.
    """

    def __init__(
        self,
        url: str,
        symbols: list[str],
        *,
        password: str | None = None,
        trades: bool = True,
        market_data: bool = False,
        reconnect_max: float = 5.0,
        wait: float = 0.0,
    ) -> None:
        self.url, self.password = url, password
        self.reconnect_max = reconnect_max
        self.client: Client = connect(url, password)
        self.names = resolve(self.client, url, symbols, wait)
        self.cluster = any(n.cluster for n in self.names)
        self.channels: dict[bytes, tuple[str, SymbolNames]] = {}
        for n in self.names:
            self.channels[n.orderbook.encode()] = ("book", n)
            if trades:
                self.channels[n.trades.encode()] = ("trade", n)
            if market_data:
                self.channels[n.market_data.encode()] = ("market_data", n)
        self.books = {(n.venue, n.symbol): BookSequence() for n in self.names}
        self.last_trade: dict[tuple[str, str], tuple[int, int]] = {}
        self.gaps = self.missed = self.resets = self.reconnects = self.duplicates = 0
        self.pubsub = None
        self.queue: list[Event] = []
        self.down_since: float | None = None
        self._start()

    # ----- the procedure ------------------------------------------------------------------

    def _start(self) -> None:
        """Steps 1 and 2: subscribe and wait for it, then the snapshots from the keys."""
        ps = self.client.pubsub()
        channels = list(self.channels)
        if self.cluster:
            ps.ssubscribe(*channels)
        else:
            ps.subscribe(*channels)
        self.pubsub = ps
        early: list[dict] = []
        confirmed: set[bytes] = set()
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while len(confirmed) < len(channels):
            if time.monotonic() > deadline:
                raise ConsumerError(f"Redis at {self.url} did not confirm the subscriptions")
            msg = self._get(0.1)
            if msg is None:
                continue
            if msg["type"] in ("subscribe", "ssubscribe"):
                confirmed.add(msg["channel"])
            else:
                early.append(msg)
        for names in self.names:
            raw = self.client.get(names.orderbook)
            if raw is not None:
                self._book(names, orjson.loads(raw), snapshot=True)
        for msg in early:
            self._message(msg)

    def _get(self, timeout: float) -> dict | None:
        if self.cluster:
            # One socket per shard: poll each briefly rather than block on one of them.
            end = time.monotonic() + timeout
            while True:
                msg = self.pubsub.get_sharded_message(timeout=0.002)
                if msg is not None or time.monotonic() >= end:
                    return msg
        return self.pubsub.get_message(timeout=timeout)

    def _message(self, msg: dict) -> None:
        if msg["type"] not in ("message", "smessage"):
            return
        what = self.channels.get(msg["channel"])
        if what is None:
            return
        kind, names = what
        data = orjson.loads(msg["data"])
        if kind == "book":
            self._book(names, data, snapshot=False)
        elif kind == "trade":
            self._trade(names, data)
        else:
            self.queue.append(Event("market_data", names.venue, names.symbol, data))

    def _book(self, names: SymbolNames, book: dict, *, snapshot: bool) -> None:
        seq, ts = book["seq"], book["timestamp"]
        verdict, prev = self.books[(names.venue, names.symbol)].check(seq, ts)
        if verdict == "dup":
            return
        if verdict == "gap":
            self.gaps += 1
            self.missed += seq - prev - 1
            self.queue.append(
                Event("gap", names.venue, names.symbol, None, False, seq - prev - 1, prev, seq)
            )
        elif verdict == "reset":
            self.resets += 1
            self.queue.append(Event("reset", names.venue, names.symbol, None, False, 0, prev, seq))
        self.queue.append(Event("book", names.venue, names.symbol, book, snapshot))

    def _trade(self, names: SymbolNames, trade: dict) -> None:
        # A trade in a round trip Redis did not confirm is sent again: skip the second copy.
        key = (names.venue, names.symbol)
        mark = (trade["timestamp"], trade["trade_id"])
        last = self.last_trade.get(key)
        if last is not None and mark <= last:
            self.duplicates += 1
            return
        self.last_trade[key] = mark
        self.queue.append(Event("trade", names.venue, names.symbol, trade))

    # ----- reading ------------------------------------------------------------------------

    def poll(self, timeout: float = 1.0) -> list[Event]:
        """The events available within `timeout` seconds (possibly none)."""
        if not self.queue:
            try:
                if self.down_since is not None:
                    self._reconnect(timeout)
                else:
                    msg = self._get(timeout)
                    while msg is not None:
                        self._message(msg)
                        msg = self._get(0) if len(self.queue) < 1000 else None
            except (redis.RedisError, OSError) as exc:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    self.delay = 0.1
                    log.warning("lost Redis at %s (%s); reconnecting", self.url, exc)
                self._close_pubsub()
        out, self.queue = self.queue, []
        return out

    def __iter__(self) -> Iterator[Event]:
        while True:
            yield from self.poll()

    def _reconnect(self, timeout: float) -> None:
        time.sleep(min(self.delay * random.uniform(0.8, 1.2), timeout))
        self.delay = min(self.delay * 2, self.reconnect_max)
        self._close_pubsub()
        self._start()
        down = time.monotonic() - self.down_since
        self.down_since = None
        self.reconnects += 1
        self.queue.insert(0, Event("reconnected", down_s=down))

    def _close_pubsub(self) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                self.pubsub.close()
            self.pubsub = None

    def close(self) -> None:
        self._close_pubsub()
        self.client.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
