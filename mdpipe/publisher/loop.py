"""The publishing loop: every books and trades ring of an instance, tailed into Redis."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import numpy as np
import posix_ipc
from redis.crc import key_slot
from redis.exceptions import RedisError

from mdpipe import config as config_mod
from mdpipe import redis_names as N
from mdpipe.affinity import pin_to_core
from mdpipe.publisher import payloads as P
from mdpipe.publisher.sink import RedisSink, command, publish_prefix, set_prefix, xadd_prefix
from mdpipe.publisher.status import (
    BOOKS_CONFLATED,
    BOOKS_LOST,
    BOOKS_PUBLISHED,
    BOOKS_REPUBLISHED,
    CANDLES_PUBLISHED,
    COUNTERS,
    CURSOR,
    DROPPED_BOOKS,
    FUNDING_PUBLISHED,
    G_LAG_NS,
    G_LAG_RECORDS,
    G_REDIS_UP,
    G_RINGS,
    MD_PUBLISHED,
    REDIS_ERRORS,
    REDIS_RECONNECTS,
    STREAM_ENTRIES,
    TICKERS_LOST,
    TRADES_LOST,
    TRADES_PUBLISHED,
    previous_counters,
    ring_key,
)
from mdpipe.readers import LayoutError, NoSuchRingError, Reader, attach
from mdpipe.shm.segment import list_segments, read_status
from mdpipe.shm.status import StatusWriter
from mdpipe.tailer import RingTailer

log = logging.getLogger("mdpipe.publisher")

_RING_KINDS = {"books": "book", "trades": "trade", "tickers": "ticker"}
MARKET_DATA_INTERVAL = 0.25  # seconds between two tickers of one symbol
SCAN_EVERY = 0.01  # how often symbols with a ticker or stream book to send are looked at
GAUGES_EVERY = 0.1
DISCOVER_EVERY = 0.5
IDLE_MIN, IDLE_MAX = 200e-6, 1e-3  # sleep between polls of empty rings, doubling


class _Ring(RingTailer):
    """A books or trades ring, its venue and its symbol-id -> SymbolState table."""

    __slots__ = ("is_book", "kind", "interval", "exchange", "table", "lag_ix", "stats_upto")

    def __init__(
        self,
        name: str,
        reader: Reader,
        counters: np.ndarray,
        cursor_ix: int | None,
        *,
        is_book: bool,
        exchange: str,
        kind: str = "",
    ) -> None:
        super().__init__(name, reader, counters, cursor_ix)
        self.is_book, self.exchange = is_book, exchange
        self.kind = kind or ("book" if is_book else "trade")
        # candles_1m.usdm.0 -> "1m"
        self.interval = name.split(".", 1)[0][len("candles_") :] if kind == "candle" else ""
        self.table: list[P.SymbolState] = []
        self.lag_ix: int | None = None
        self.stats_upto = 0  # ring position up to which trades are in the 24 h figures


class Publisher:
    """The publishing loop; `run(stop)` until stop is set. One per instance (its status segment)."""

    def __init__(
        self,
        cfg: config_mod.Config,
        *,
        clock: Callable[[], int] = time.time_ns,
        market_data_interval: float = MARKET_DATA_INTERVAL,
    ) -> None:
        pub = cfg.publisher
        self.instance = cfg.instance
        self.batch = pub.batch
        self.levels = pub.levels
        self.ttl = cfg.redis.key_ttl
        self.templates = N.Templates(
            pub.orderbook_channel,
            pub.trades_channel,
            pub.market_data_channel,
            pub.orderbook_stream,
            pub.trades_stream,
            pub.funding_channel,
            pub.candles_channel,
        )
        venues = {N.venue_of(f.exchange, f.market) for f in cfg.feeds}
        # The only venue of the config keeps the plain names; any other gets a venue segment.
        self.plain_venue = venues.pop() if len(venues) == 1 else None
        self.streams = pub.streams
        self.stream_maxlen = pub.stream_maxlen
        self.stream_book_interval = pub.stream_book_interval
        self.clock = clock
        self.md_interval = market_data_interval
        self.refresh_every = min(10.0, self.ttl / 3)
        previous = previous_counters(cfg.instance)
        self.resume = {k[len(CURSOR) :]: v for k, v in previous.items() if k.startswith(CURSOR)}
        self.status = StatusWriter.create(
            cfg.instance,
            "publisher",
            counters=COUNTERS,
            mode=config_mod.segment_mode(cfg),
            group=cfg.shm.group,  # the group that reads the rings reads our counters too
        )
        self.c = self.status.counters
        for i, name in enumerate(COUNTERS):  # a resumed publisher continues the totals too
            if not name.startswith("g_"):
                self.c[i] = previous.get(name, 0)
        self.sink = RedisSink(
            cfg.redis.url,
            cfg.redis_password,
            pub.reconnect_initial,
            pub.reconnect_max,
            self.ttl,
        )
        self.url = cfg.redis.url
        self.cluster = False  # the names in self.states are hash-tagged
        self.rings: dict[str, _Ring] = {}
        self.ring_list: list[_Ring] = []
        self.states: dict[tuple[str, str], P.SymbolState] = {}
        self.refused: set[str] = set()
        self.unlisted: set[P.SymbolState] = set()  # not yet in the Redis directory
        self.numbers_before: dict[P.SymbolState, tuple[int, int]] = {}
        self.stream_dirty: set[P.SymbolState] = set()  # newer book than the books stream has
        self.md_dirty: set[P.SymbolState] = set()
        self.next_scan = 0.0
        self.pending_books = self.pending_trades = self.pending_md = 0
        self.pending_republished = self.pending_entries = 0
        self.pending_funding = self.pending_candles = 0
        self.pending_commit = 0  # newest commit_ts_ns among the records in the pipeline
        self.published_commit = 0  # newest commit_ts_ns Redis has
        self.lost_unlogged = 0
        self.lost_logged_at = 0.0
        self.outage_start: tuple[float, int] | None = None  # (when, dropped_books then)

    # ----- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Publish until stop is set; sleeps 0.2-1 ms between polls only when every ring is empty."""
        self._discover(initial=True)
        if self.sink.connect():
            self._connected()
        else:
            self.c[REDIS_ERRORS] += 1
            self._outage_began()
            log.warning("redis at %s unreachable: %s", self.url, self.sink.last_error)
        idle = IDLE_MIN
        next_tick = next_discover = time.monotonic()
        next_refresh = next_tick + self.refresh_every
        while not stop.is_set():
            got = self.step()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + GAUGES_EVERY
                if now >= next_discover:
                    next_discover = now + DISCOVER_EVERY
                    self._discover()
                if self.sink.due(now):
                    self._reconnect()
                if now >= next_refresh:
                    next_refresh = now + self.refresh_every
                    self._refresh_keys()
                self._gauges()
            if got:
                idle = IDLE_MIN
            else:
                time.sleep(idle)
                idle = min(idle * 2, IDLE_MAX)
        self.step()  # what arrived meanwhile, if Redis takes it
        if self.sink.up:  # and the keys and tickers still waiting for their interval
            self._queue_due(math.inf)
            self._send()

    def step(self) -> int:
        """One pass over every ring and one pipeline round trip; returns records read.

        While Redis is down, trades stay in their rings (read again when it is back, in
        order); books are read, and only each symbol's newest is kept for later.
        """
        up = self.sink.up
        if up and self.unlisted:
            self._list_symbols()
            up = self.sink.up
        got = 0
        read_trades: list[_Ring] = []
        for ring in self.ring_list:
            if not ring.is_book and not up:
                continue
            recs = ring.read(self.batch)
            if ring.reader.lost != ring.lost_seen:
                self._count_lost(ring)
            if not len(recs):
                continue
            got += len(recs)
            recs = self._known_symbols(ring, recs)
            if not len(recs):
                continue
            if ring.is_book:
                self._books(ring, recs, up)
            elif ring.kind == "trade":
                read_trades.append(ring)
                self._trades(ring, recs)
            else:
                read_trades.append(ring)  # like trades: read again after a failed round trip
                self._derived(ring, recs)
        if not self._flush():
            for ring in read_trades:  # not confirmed by Redis: sent again once it is back
                ring.rewind()
        if got:
            for ring in self.ring_list:
                ring.save()
        return got

    def _books(self, ring: _Ring, recs: np.ndarray, up: bool) -> None:
        n = len(recs)
        if not up:
            self.c[DROPPED_BOOKS] += n
            P.books(recs[P.newest_per_symbol(recs["symbol_id"])], ring.table, self.levels, None)
            return
        if n == self.batch and ring.reader.backlog() > 0:
            keep = P.newest_per_symbol(recs["symbol_id"])
            if len(keep) < n:
                self.c[BOOKS_CONFLATED] += n - len(keep)
                recs = recs[keep]
        touched = P.books(recs, ring.table, self.levels, self.sink)
        self.pending_books += len(recs)
        self.pending_commit = max(self.pending_commit, int(recs["commit_ts_ns"][-1]))
        self.md_dirty |= touched
        if self.streams:
            self.stream_dirty |= touched

    def _trades(self, ring: _Ring, recs: np.ndarray) -> None:
        # Trades read again after a failed round trip are in the 24 h figures already.
        counted = ring.stats_upto - ring.mark
        if counted < len(recs):
            P.count_trades(recs[max(0, counted) :], ring.table, self.clock())
            ring.stats_upto = ring.mark + len(recs)
        if self.streams:
            table = ring.table
            self._numbers_before([table[i] for i in np.unique(recs["symbol_id"]).tolist()])
        touched = P.trades(recs, ring.table, self.sink, self.streams)
        self.pending_trades += len(recs)
        if self.streams:
            self.pending_entries += len(recs)
        self.pending_commit = max(self.pending_commit, int(recs["commit_ts_ns"][-1]))
        self.md_dirty |= touched

    def _derived(self, ring: _Ring, recs: np.ndarray) -> None:
        """Tickers (funding:, the newest per symbol) and candles (candles:, every one)."""
        if ring.kind == "ticker":
            self.pending_funding += P.tickers(recs, ring.table, self.sink)
        else:
            for st in {ring.table[i] for i in np.unique(recs["symbol_id"]).tolist()}:
                self._candle_names(st, ring.interval)
            P.candles(recs, ring.table, self.sink, ring.interval)
            self.pending_candles += len(recs)
        self.pending_commit = max(self.pending_commit, int(recs["commit_ts_ns"][-1]))

    def _candle_names(self, st: P.SymbolState, interval: str) -> None:
        cmds = st.candle_cmds
        if cmds is None:
            cmds = st.candle_cmds = {}
        if interval not in cmds:
            name = N.candle_name(st.names, interval).encode()
            cmds[interval] = (publish_prefix(name, self.cluster), set_prefix(name))

    def _flush(self) -> bool:
        """Queue the keys, tickers and stream books that are due, then send; False on failure."""
        sink = self.sink
        if not sink.up:
            return False  # everything is re-sent from the newest state when Redis is back
        if self.stream_dirty or self.md_dirty:
            now = time.monotonic()
            if now >= self.next_scan:
                self.next_scan = now + SCAN_EVERY
                self._queue_due(now)
        if sink.pending:
            return self._send()
        return True

    def _queue_due(self, now: float) -> None:
        """Stream books and tickers due at their cadence: each symbol's newest, rate-limited."""
        if self.stream_dirty:
            every = self.stream_book_interval
            due = [st for st in self.stream_dirty if now - st.stream_book_sent >= every]
            for st in due:
                self._queue_stream_book(st, now)
            self.stream_dirty.difference_update(due)
        if self.md_dirty:
            due = [st for st in self.md_dirty if now - st.md_sent >= self.md_interval]
            if due:
                now_ns = self.clock()
                for st in due:
                    self._queue_market_data(st, now_ns, now)
                self.md_dirty.difference_update(due)

    def _queue_stream_book(self, st: P.SymbolState, now: float) -> None:
        if self.streams and st.book is not None:
            self._numbers_before([st])
            st.books_n += 1
            self.sink.xadd(st.slot, st.books_xadd, st.book, st.books_n)
            self.pending_entries += 1
        st.stream_book_stale = False
        st.stream_book_sent = now

    def _queue_market_data(self, st: P.SymbolState, now_ns: int, now: float) -> None:
        payload = P.market_data(st, now_ns)
        self.sink.publish(st.slot, st.md_pub, payload)
        self.sink.set(st.slot, st.md_set, payload)
        st.md_sent = now
        self.pending_md += 1

    def _send(self) -> bool:
        c = self.c
        ok = self.sink.send()
        if ok:
            c[BOOKS_PUBLISHED] += self.pending_books
            c[BOOKS_REPUBLISHED] += self.pending_republished
            c[TRADES_PUBLISHED] += self.pending_trades
            c[MD_PUBLISHED] += self.pending_md
            c[STREAM_ENTRIES] += self.pending_entries
            c[FUNDING_PUBLISHED] += self.pending_funding
            c[CANDLES_PUBLISHED] += self.pending_candles
            if self.pending_commit:
                self.published_commit = self.pending_commit
                c[G_LAG_NS] = max(0, time.time_ns() - self.pending_commit)
        else:
            # Redis may have taken part of the pipeline: books it did not confirm count as
            # dropped; trades are read again from the ring (their stream numbers with them).
            c[DROPPED_BOOKS] += self.pending_books
            c[REDIS_ERRORS] += 1
            c[G_REDIS_UP] = 0
            self._outage_began()
            for st, (trades_n, books_n) in self.numbers_before.items():
                if st.books_n != books_n:  # its book entry is added again once Redis is back
                    st.stream_book_stale = True
                st.trades_n, st.books_n = trades_n, books_n  # read again from Redis when back
            self.unlisted.update(self.numbers_before)
        self.numbers_before.clear()
        self.pending_books = self.pending_trades = self.pending_md = 0
        self.pending_republished = self.pending_entries = 0
        self.pending_funding = self.pending_candles = 0
        self.pending_commit = 0
        return ok

    # ----- Redis outages ------------------------------------------------------------------

    def _outage_began(self) -> None:
        if self.outage_start is None:
            c = self.c
            self.outage_start = (time.monotonic(), int(c[DROPPED_BOOKS]))

    def _reconnect(self) -> None:
        sink = self.sink
        was_up_before = sink.ever_up
        if not sink.connect():
            self.c[REDIS_ERRORS] += 1
            return
        if was_up_before:
            self.c[REDIS_RECONNECTS] += 1
        if self.outage_start is not None:
            began, books = self.outage_start
            behind = sum(r.backlog for r in self.ring_list if not r.is_book)
            log.info(
                "redis back after %.1f s; dropped %d books meanwhile; %d trades to catch up; "
                "re-publishing the newest book of %d symbols",
                time.monotonic() - began,
                int(self.c[DROPPED_BOOKS]) - books,
                behind,
                len(self.states),
            )
            self.outage_start = None
        self._connected()

    def _connected(self) -> None:
        """Redis answers: name the symbols for it, learn the streams, re-send the newest state."""
        self.c[G_REDIS_UP] = 1
        if self.sink.cluster != self.cluster:
            self.cluster = self.sink.cluster
            log.info("redis at %s is a cluster of %d masters", self.url, len(self.sink.nodes))
            for st in self.states.values():
                self._name(st)
        self.unlisted.update(self.states.values())
        self._list_symbols()
        if self.sink.up:
            self._republish_all()

    def _republish_all(self) -> None:
        """Every symbol's newest book (key, then channel), trade key and ticker, in one pipeline."""
        sink = self.sink
        now_ns, now = self.clock(), time.monotonic()
        for st in self.states.values():
            if st.book is not None:
                sink.set(st.slot, st.book_set, st.book)
                sink.publish(st.slot, st.book_pub, st.book)
                self.pending_republished += 1
                if self.streams and st.stream_book_stale:
                    self._queue_stream_book(st, now)
            if st.trade is not None:
                sink.set(st.slot, st.trade_set, st.trade)
            if st.book is not None or st.trade is not None:
                self._queue_market_data(st, now_ns, now)
        self.stream_dirty.clear()
        self.md_dirty.clear()
        self._send()

    def _refresh_keys(self) -> None:
        """Renew the keys of symbols whose ring writer lives, and re-send their ticker.

        The 24 h figures move with the clock even without trades; a dead feed's keys expire.
        """
        if not self.sink.up:
            return
        live = set()
        for ring in self.ring_list:
            if ring.reader.writer_alive:
                live.update(ring.table)
        sink = self.sink
        now_ns, now = self.clock(), time.monotonic()
        for st in live:
            if st.book is not None:
                sink.set(st.slot, st.book_set, st.book)
            if st.trade is not None:
                sink.set(st.slot, st.trade_set, st.trade)
            if st.book is not None or st.trade is not None:
                self._queue_market_data(st, now_ns, now)
        self.md_dirty.difference_update(live)
        self._queue_directory(live)
        if sink.pending:
            self._send()

    # ----- names, the directory and stream numbers ----------------------------------------

    def _name(self, st: P.SymbolState) -> None:
        """Fill in a symbol's names and the commands built from them (cluster or not)."""
        names = N.symbol_names(
            self.templates,
            st.exchange,
            st.symbol,
            segment=st.exchange != self.plain_venue,
            cluster=self.cluster,
        )
        st.names = names
        st.slot = key_slot(names.orderbook.encode()) if self.cluster else 0
        book, trade, md = (
            names.orderbook.encode(),
            names.trades.encode(),
            names.market_data.encode(),
        )
        st.book_pub, st.book_set = publish_prefix(book, self.cluster), set_prefix(book)
        st.trade_pub, st.trade_set = publish_prefix(trade, self.cluster), set_prefix(trade)
        st.md_pub, st.md_set = publish_prefix(md, self.cluster), set_prefix(md)
        st.books_xadd = xadd_prefix(names.orderbook_stream.encode(), self.stream_maxlen)
        st.trades_xadd = xadd_prefix(names.trades_stream.encode(), self.stream_maxlen)
        funding = names.funding.encode()
        st.funding_pub, st.funding_set = publish_prefix(funding, self.cluster), set_prefix(funding)
        st.candle_cmds = None  # rebuilt from the new names on first use

    def _queue_directory(self, states: set[P.SymbolState] | list[P.SymbolState]) -> None:
        """HSET the symbols' names into the directory consumers resolve symbols with."""
        if not states:
            return
        key = N.DIRECTORY_KEY.encode()
        args: list[bytes] = [b"HSET", key]
        for st in states:
            args += (N.directory_field(st.exchange, st.symbol).encode(), st.names.to_json())
        slot = key_slot(key) if self.cluster else 0
        self.sink.raw(slot, command(*args))
        self.sink.raw(slot, command(b"EXPIRE", key, b"%d" % self.ttl))

    def _list_symbols(self) -> None:
        """Add new symbols to the directory and learn their streams' numbers (one round trip)."""
        todo = list(self.unlisted)
        self.unlisted.clear()
        if self.streams:
            calls = []
            for st in todo:
                for stream in (st.names.trades_stream, st.names.orderbook_stream):
                    calls.append((st.slot, ("XREVRANGE", stream, "+", "-", "COUNT", "1")))
            try:
                replies = self.sink.query(calls)
            except (RedisError, OSError) as exc:
                self.sink.fail(exc)
                self.c[REDIS_ERRORS] += 1
                self.c[G_REDIS_UP] = 0
                self._outage_began()
                self.unlisted.update(todo)
                return
            for k, st in enumerate(todo):
                st.trades_n = max(st.trades_n, _entry_number(replies[2 * k]))
                st.books_n = max(st.books_n, _entry_number(replies[2 * k + 1]))
        self._queue_directory(todo)
        self._send()

    def _numbers_before(self, states: list[P.SymbolState]) -> None:
        """Remember the stream numbers of the round trip's first entries, to undo a failed one."""
        before = self.numbers_before
        for st in states:
            if st not in before:
                before[st] = (st.trades_n, st.books_n)

    # ----- rings --------------------------------------------------------------------------

    def _discover(self, *, initial: bool = False) -> None:
        """Attach new books.* / trades.* rings; drop rings whose segment and writer are gone.

        Rings present at start are read from their live edge (no replay of old data); a ring
        that appears later is read from its oldest record, so a new shard loses nothing.
        """
        present = {ring for _, ring in list_segments(self.instance)}
        for name in sorted(present - self.rings.keys()):
            head = name.split(".", 1)[0]
            kind = _RING_KINDS.get(head) or ("candle" if head.startswith("candles_") else None)
            if kind is None:
                continue
            try:
                reader = attach(self.instance, name, kind=kind)
                exchange = read_status(self.instance, name).exchange
            except (NoSuchRingError, posix_ipc.ExistentialError):
                continue  # removed between listing and attaching
            except (LayoutError, PermissionError) as exc:
                if name not in self.refused:
                    self.refused.add(name)
                    log.error("not publishing ring %s: %s", name, exc)
                continue
            if not initial:
                reader.seek_oldest()
            key = ring_key(name)
            cursor_ix = self._counter_index(CURSOR + key)
            ring = _Ring(
                name,
                reader,
                self.c,
                cursor_ix,
                is_book=head == "books",
                exchange=exchange,
                kind=kind,
            )
            ring.lag_ix = self._counter_index("g_lag_" + key)
            self._load_symbols(ring)
            self.rings[name] = ring
            ring.resume(self.resume.pop(key, None))
            ring.stats_upto = ring.reader.position
            log.info("publishing ring %s (%s, %d symbols)", name, exchange or "?", len(ring.table))
        for name, ring in list(self.rings.items()):
            if name not in present and not ring.reader.writer_alive and not ring.backlog:
                ring.close()
                del self.rings[name]
                if ring.lag_ix is not None:
                    self.c[ring.lag_ix] = 0
                log.info("ring %s is gone", name)
        self.ring_list = list(self.rings.values())
        self.c[G_RINGS] = len(self.ring_list)

    def _counter_index(self, name: str) -> int | None:
        try:
            return self.status.counter_index(name)
        except ValueError as exc:
            log.info("no counter %s: %s", name, exc)
            return None

    def _load_symbols(self, ring: _Ring) -> None:
        """(Re)build a ring's symbol table from its header (new symbols, or a new writer)."""
        try:
            symbols = read_status(self.instance, ring.name).symbols
        except (posix_ipc.ExistentialError, LayoutError):
            return
        ring.table = [self._state(ring.exchange, s) for s in symbols]

    def _state(self, exchange: str, symbol: str) -> P.SymbolState:
        st = self.states.get((exchange, symbol))
        if st is None:
            st = P.SymbolState(symbol, exchange)
            self._name(st)
            self.states[(exchange, symbol)] = st
            self.unlisted.add(st)
        return st

    def _known_symbols(self, ring: _Ring, recs: np.ndarray) -> np.ndarray:
        """Make sure the ring's table names every symbol id in recs (a writer may add symbols)."""
        gen = ring.reader.generation
        if gen != ring.generation or int(recs["symbol_id"].max()) >= len(ring.table):
            ring.generation = gen
            self._load_symbols(ring)
            sids = recs["symbol_id"]
            unknown = sids >= len(ring.table)
            if unknown.any():
                log.error("ring %s: %d records of unknown symbols", ring.name, int(unknown.sum()))
                recs = recs[~unknown]
        return recs

    def _count_lost(self, ring: _Ring) -> None:
        n = ring.take_lost()
        if ring.is_book:
            self.c[BOOKS_LOST] += n
        elif ring.kind != "trade":
            self.c[TICKERS_LOST] += n
        else:
            self.c[TRADES_LOST] += n
            self.lost_unlogged += n

    def _gauges(self) -> None:
        c = self.c
        total = 0
        for ring in self.ring_list:
            lag = ring.backlog
            total += lag
            if ring.lag_ix is not None:
                c[ring.lag_ix] = lag
        c[G_LAG_RECORDS] = total
        if not self.sink.up and self.published_commit:
            c[G_LAG_NS] = max(0, time.time_ns() - self.published_commit)
        if self.lost_unlogged and time.monotonic() - self.lost_logged_at >= 1.0:
            self.lost_logged_at = time.monotonic()
            log.warning(
                "lost %d trades: the publisher was lapped (trades_lost=%d)",
                self.lost_unlogged,
                int(c[TRADES_LOST]),
            )
            self.lost_unlogged = 0
        self.status.heartbeat()

    def close(self) -> None:
        """Release the rings, the Redis connection and the status segment."""
        for ring in self.ring_list:
            ring.close()
        self.rings.clear()
        self.ring_list = []
        self.c[G_REDIS_UP] = 0
        self.sink.close()
        self.status.close()

    def counters(self) -> dict[str, int]:
        """The publisher's counters by name."""
        return {name: int(self.c[i]) for i, name in enumerate(COUNTERS)}


def _entry_number(rows: object) -> int:
    """Field n of the entry an XREVRANGE ... COUNT 1 returned (0 for an empty stream)."""
    if not rows:
        return 0
    fields = rows[0][1]
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    return int(pairs.get(b"n", 0))


def run_publisher(
    cfg: config_mod.Config,
    stop: threading.Event | None = None,
    *,
    clock: Callable[[], int] = time.time_ns,
    market_data_interval: float = MARKET_DATA_INTERVAL,
) -> dict[str, int]:
    """Run the publisher until stop is set (forever when None); returns its final counters."""
    stop = stop or threading.Event()
    if cfg.publisher.core >= 0:
        pin_to_core(cfg.publisher.core)
    pub = Publisher(cfg, clock=clock, market_data_interval=market_data_interval)
    try:
        pub.run(stop)
        return pub.counters()
    finally:
        pub.close()
