"""The publisher: tails every books and trades ring of an instance into Redis.

    python -m mdpipe.publisher --config FILE [--set key=value ...] [--instance NAME]

Channels (names from publisher.*_channel; formats in mdpipe.publisher_payloads): every book
record on orderbook:{SYMBOL}, every trade on trades:{SYMBOL}, a ticker with rolling 24 h
figures on market_data:{SYMBOL} (at most every MARKET_DATA_INTERVAL per symbol). Keys of the
same three names hold the newest book, trade and ticker for a late subscriber, with the
redis.key_ttl TTL, set at most every KEY_INTERVAL per symbol (so a subscriber that subscribes
and then GETs a key sees the channel continue from at most that far behind the key); they
are refreshed while their ring's writer lives and expire after it.

Falling behind (a full batch with more waiting), books are conflated per symbol to the
newest of the batch (counted); trades never are, and a trade ring that laps the publisher
is counted exactly (trades_lost) and logged. A Redis outage is survived: the rings are
still consumed (no lapped-loss storm), the newest state per symbol is kept, what could not
be sent is counted, and a Redis that comes back gets every symbol's newest book and
ticker at once. Counters live in the `publisher` status segment (see COUNTERS), with each
ring's read position (g_cursor_<ring>): a publisher restarted after a crash resumes there and
continues the totals, so a crash loses nothing (at worst the last batch is sent twice).
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import posix_ipc

from mdpipe import config as config_mod
from mdpipe import logs
from mdpipe import publisher_payloads as P
from mdpipe.affinity import pin_to_core
from mdpipe.counters import PUBLISHER
from mdpipe.publisher_redis import RedisSink, publish_prefix, set_prefix
from mdpipe.readers import LayoutError, NoSuchRingError, Reader, attach
from mdpipe.shm.segment import list_segments, read_status
from mdpipe.shm.status import StatusWriter
from mdpipe.shm.writer import WriterAliveError

log = logging.getLogger("mdpipe.publisher")

COUNTERS = PUBLISHER.names  # declared with their meanings in mdpipe/counters.py
(
    BOOKS_PUBLISHED,
    TRADES_PUBLISHED,
    MD_PUBLISHED,
    BOOKS_CONFLATED,
    TRADES_LOST,
    BOOKS_LOST,
    DROPPED_BOOKS,
    DROPPED_TRADES,
    REDIS_ERRORS,
    REDIS_RECONNECTS,
    BOOKS_REPUBLISHED,
    G_REDIS_UP,
    G_LAG_RECORDS,
    G_LAG_NS,
    G_RINGS,
) = range(len(COUNTERS))

MARKET_DATA_INTERVAL = 0.25  # seconds between two tickers of one symbol
KEY_INTERVAL = 0.1  # seconds between two SETs of one symbol's newest book / trade key
SCAN_EVERY = 0.01  # how often symbols with a key or ticker to send are looked at
GAUGES_EVERY = 0.1
DISCOVER_EVERY = 0.5
IDLE_MIN, IDLE_MAX = 200e-6, 1e-3  # sleep between polls of empty rings, doubling


class _Ring:
    """One attached books or trades ring and its symbol-id -> SymbolState table."""

    __slots__ = (
        "name",
        "is_book",
        "reader",
        "exchange",
        "table",
        "generation",
        "lost",
        "lag_ix",
        "cursor_ix",
    )

    def __init__(self, name: str, is_book: bool, reader: Reader, exchange: str) -> None:
        self.name, self.is_book, self.reader, self.exchange = name, is_book, reader, exchange
        self.table: list[P.SymbolState] = []
        self.generation = reader.generation
        self.lost = reader.lost
        self.lag_ix: int | None = None
        self.cursor_ix: int | None = None


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
        self.templates = (pub.orderbook_channel, pub.trades_channel, pub.market_data_channel)
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
        self.rings: dict[str, _Ring] = {}
        self.ring_list: list[_Ring] = []
        self.states: dict[tuple[str, str], P.SymbolState] = {}
        self.channel_owner: dict[bytes, tuple[str, str]] = {}
        self.refused: set[str] = set()
        self.key_dirty: set[P.SymbolState] = set()
        self.md_dirty: set[P.SymbolState] = set()
        self.next_scan = 0.0
        self.pending_books = self.pending_trades = self.pending_md = 0
        self.pending_republished = 0
        self.pending_commit = 0  # newest commit_ts_ns among the records in the pipeline
        self.published_commit = 0  # newest commit_ts_ns Redis has
        self.lost_unlogged = 0
        self.lost_logged_at = 0.0
        self.outage_start: tuple[float, int, int] | None = None

    # ----- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Publish until stop is set; sleeps 0.2-1 ms between polls only when every ring is empty."""
        self._discover(initial=True)
        if self.sink.connect():
            self.c[G_REDIS_UP] = 1
        else:
            self.c[REDIS_ERRORS] += 1
            self._outage_began()
            log.warning("redis at %s unreachable: %s", self.url, self.sink.last_error)
        idle = IDLE_MIN
        next_tick = next_discover = next_refresh = time.monotonic()
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
        """One pass over every ring and one pipeline round trip; returns records read."""
        publish = self.sink.publish if self.sink.up else None
        got = 0
        for ring in self.ring_list:
            reader = ring.reader
            recs = reader.read_batch(self.batch)
            if reader.lost != ring.lost:
                self._count_lost(ring)
            if not len(recs):
                continue
            got += len(recs)
            recs = self._known_symbols(ring, recs)
            if not len(recs):
                continue
            if ring.is_book:
                self._books(ring, recs, publish)
            else:
                self._trades(ring, recs, publish)
        self._flush()
        if got:
            c = self.c
            for ring in self.ring_list:
                if ring.cursor_ix is not None:
                    c[ring.cursor_ix] = ring.reader.position
        return got

    def _books(self, ring: _Ring, recs: np.ndarray, publish: P.Publish | None) -> None:
        n = len(recs)
        if publish is None:
            self.c[DROPPED_BOOKS] += n
            P.books(recs[P.newest_per_symbol(recs["symbol_id"])], ring.table, self.levels, None)
            return
        if n == self.batch and ring.reader.backlog() > 0:
            keep = P.newest_per_symbol(recs["symbol_id"])
            if len(keep) < n:
                self.c[BOOKS_CONFLATED] += n - len(keep)
                recs = recs[keep]
        touched = P.books(recs, ring.table, self.levels, publish)
        self.pending_books += len(recs)
        self.pending_commit = max(self.pending_commit, int(recs["commit_ts_ns"][-1]))
        self.key_dirty |= touched
        self.md_dirty |= touched

    def _trades(self, ring: _Ring, recs: np.ndarray, publish: P.Publish | None) -> None:
        touched = P.trades(recs, ring.table, publish, self.clock())
        if publish is None:
            self.c[DROPPED_TRADES] += len(recs)
            return
        self.pending_trades += len(recs)
        self.pending_commit = max(self.pending_commit, int(recs["commit_ts_ns"][-1]))
        self.key_dirty |= touched
        self.md_dirty |= touched

    def _flush(self) -> None:
        """Queue the keys and tickers that are due, then send the pipeline."""
        sink = self.sink
        if not sink.up:
            return  # everything is re-sent from the newest state when Redis is back
        if self.key_dirty or self.md_dirty:
            now = time.monotonic()
            if now >= self.next_scan:
                self.next_scan = now + SCAN_EVERY
                self._queue_due(now)
        if sink.pending:
            self._send()

    def _queue_due(self, now: float) -> None:
        """Keys of symbols not set for KEY_INTERVAL, tickers not sent for the ticker interval.

        Rate-limited per symbol so that a burst over many symbols is not doubled by SETs; the
        newest state always lands, at most one interval (plus SCAN_EVERY) later.
        """
        sink = self.sink
        if self.key_dirty:
            due = [st for st in self.key_dirty if now - st.keys_sent >= KEY_INTERVAL]
            for st in due:
                if st.book_stale:
                    sink.set(st.book_set, st.book)
                    st.book_stale = False
                if st.trade_stale:
                    sink.set(st.trade_set, st.trade)
                    st.trade_stale = False
                st.keys_sent = now
            self.key_dirty.difference_update(due)
        if self.md_dirty:
            due = [st for st in self.md_dirty if now - st.md_sent >= self.md_interval]
            if due:
                now_ns = self.clock()
                for st in due:
                    self._queue_market_data(st, now_ns, now)
                self.md_dirty.difference_update(due)

    def _queue_market_data(self, st: P.SymbolState, now_ns: int, now: float) -> None:
        payload = P.market_data(st, now_ns)
        self.sink.publish(st.md_pub, payload)
        self.sink.set(st.md_set, payload)
        st.md_sent = now
        self.pending_md += 1

    def _send(self) -> None:
        c = self.c
        ok = self.sink.send()
        if ok:
            c[BOOKS_PUBLISHED] += self.pending_books
            c[BOOKS_REPUBLISHED] += self.pending_republished
            c[TRADES_PUBLISHED] += self.pending_trades
            c[MD_PUBLISHED] += self.pending_md
            if self.pending_commit:
                self.published_commit = self.pending_commit
                c[G_LAG_NS] = max(0, time.time_ns() - self.pending_commit)
        else:
            # Redis may have taken part of the pipeline: what it did not confirm counts as dropped.
            c[DROPPED_BOOKS] += self.pending_books
            c[DROPPED_TRADES] += self.pending_trades
            c[REDIS_ERRORS] += 1
            c[G_REDIS_UP] = 0
            self._outage_began()
        self.pending_books = self.pending_trades = self.pending_md = 0
        self.pending_republished = 0
        self.pending_commit = 0

    # ----- Redis outages ------------------------------------------------------------------

    def _outage_began(self) -> None:
        c = self.c
        self.outage_start = (time.monotonic(), int(c[DROPPED_BOOKS]), int(c[DROPPED_TRADES]))

    def _reconnect(self) -> None:
        sink = self.sink
        was_up_before = sink.ever_up
        if not sink.connect():
            self.c[REDIS_ERRORS] += 1
            return
        c = self.c
        c[G_REDIS_UP] = 1
        if was_up_before:
            c[REDIS_RECONNECTS] += 1
        if self.outage_start is not None:
            began, books, trades = self.outage_start
            log.info(
                "redis back after %.1f s; dropped %d books and %d trades meanwhile; "
                "re-publishing the newest state of %d symbols",
                time.monotonic() - began,
                int(c[DROPPED_BOOKS]) - books,
                int(c[DROPPED_TRADES]) - trades,
                len(self.states),
            )
            self.outage_start = None
        self._republish_all()

    def _republish_all(self) -> None:
        """Every symbol's newest book (channel and key), trade key and ticker, in one pipeline."""
        sink = self.sink
        now_ns, now = self.clock(), time.monotonic()
        for st in self.states.values():
            if st.book is not None:
                sink.publish(st.book_pub, st.book)
                sink.set(st.book_set, st.book)
                self.pending_republished += 1
            if st.trade is not None:
                sink.set(st.trade_set, st.trade)
            if st.book is not None or st.trade is not None:
                self._queue_market_data(st, now_ns, now)
            st.book_stale = st.trade_stale = False
            st.keys_sent = now
        self.key_dirty.clear()
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
                sink.set(st.book_set, st.book)
            if st.trade is not None:
                sink.set(st.trade_set, st.trade)
            if st.book is not None or st.trade is not None:
                self._queue_market_data(st, now_ns, now)
            st.book_stale = st.trade_stale = False
            st.keys_sent = now
        self.key_dirty.difference_update(live)
        self.md_dirty.difference_update(live)
        if sink.pending:
            self._send()

    # ----- rings --------------------------------------------------------------------------

    def _discover(self, *, initial: bool = False) -> None:
        """Attach new books.* / trades.* rings; drop rings whose segment and writer are gone.

        Rings present at start are read from their live edge (no replay of old data); a ring
        that appears later is read from its oldest record, so a new shard loses nothing.
        """
        present = {ring for _, ring in list_segments(self.instance)}
        for name in sorted(present - self.rings.keys()):
            head = name.split(".", 1)[0]
            if head not in ("books", "trades"):
                continue
            try:
                reader = attach(self.instance, name, kind="book" if head == "books" else "trade")
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
            ring = _Ring(name, head == "books", reader, exchange)
            self._load_symbols(ring)
            self.rings[name] = ring
            self._lag_gauge(ring)
            self._resume(ring)
            log.info("publishing ring %s (%s, %d symbols)", name, exchange or "?", len(ring.table))
        for name, ring in list(self.rings.items()):
            if name not in present and not ring.reader.writer_alive and not ring.reader.backlog():
                ring.reader.close()
                del self.rings[name]
                if ring.lag_ix is not None:
                    self.c[ring.lag_ix] = 0
                log.info("ring %s is gone", name)
        self.ring_list = list(self.rings.values())
        self.c[G_RINGS] = len(self.ring_list)

    def _lag_gauge(self, ring: _Ring) -> None:
        key = _ring_key(ring.name)
        try:
            ring.lag_ix = self.status.counter_index("g_lag_" + key)
            ring.cursor_ix = self.status.counter_index(CURSOR + key)
        except ValueError as exc:
            log.info("no per-ring lag gauge or cursor for %s: %s", ring.name, exc)

    def _resume(self, ring: _Ring) -> None:
        """Go on where a publisher that died stopped reading this ring (nothing unpublished)."""
        start = self.resume.pop(_ring_key(ring.name), None)
        reader = ring.reader
        # No predecessor, or it read another segment of that name: start where we are.
        if start is not None and start <= reader.position:
            behind = reader.position - start
            reader.seek(start)
            lost = reader.lost - ring.lost
            log.info(
                "ring %s: resuming where the previous publisher stopped (%d records behind%s)",
                ring.name,
                behind,
                f", {lost} of them already overwritten" if lost else "",
            )
        if ring.cursor_ix is not None:
            self.c[ring.cursor_ix] = reader.position

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
            book, trade, md = P.channel_names(self.templates, symbol, exchange)
            for ch in (book, trade, md):
                owner = self.channel_owner.setdefault(ch, (exchange, symbol))
                if owner != (exchange, symbol):
                    log.warning(
                        "channel %s carries both %s %s and %s %s: add {exchange} or {market} "
                        "to the publisher channel templates",
                        ch.decode(),
                        *owner,
                        exchange,
                        symbol,
                    )
            st = P.SymbolState(
                symbol,
                exchange,
                book_pub=publish_prefix(book),
                book_set=set_prefix(book),
                trade_pub=publish_prefix(trade),
                trade_set=set_prefix(trade),
                md_pub=publish_prefix(md),
                md_set=set_prefix(md),
            )
            self.states[(exchange, symbol)] = st
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
        n = ring.reader.lost - ring.lost
        ring.lost = ring.reader.lost
        if ring.is_book:
            self.c[BOOKS_LOST] += n
        else:
            self.c[TRADES_LOST] += n
            self.lost_unlogged += n

    def _gauges(self) -> None:
        c = self.c
        total = 0
        for ring in self.ring_list:
            lag = ring.reader.backlog()
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
            ring.reader.close()
        self.rings.clear()
        self.ring_list = []
        self.c[G_REDIS_UP] = 0
        self.sink.close()
        self.status.close()

    def counters(self) -> dict[str, int]:
        """The publisher's counters by name."""
        return {name: int(self.c[i]) for i, name in enumerate(COUNTERS)}


CURSOR = "g_cursor_"  # + ring key: the next record of that ring the publisher reads


def _ring_key(ring: str) -> str:
    """A ring name as it appears in counter names (books.sim.0 -> books_sim_0)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", ring)


def previous_counters(instance: str) -> dict[str, int]:
    """The counters of the instance's previous publisher (its ring cursors among them), if gone."""
    try:
        st = read_status(instance, "publisher")
    except (posix_ipc.ExistentialError, LayoutError, PermissionError):
        return {}
    if st.writer_alive:
        return {}  # creating our status segment will refuse to start
    return st.counters


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


def main(argv: Sequence[str] | None = None) -> int:
    """The `python -m mdpipe.publisher` entry point; exits 0 on SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(
        prog="python -m mdpipe.publisher", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--config", help="TOML config file (default: built-in defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    ap.add_argument("--instance", help="instance name (overrides the config)")
    args = ap.parse_args(argv)
    overrides = list(args.set) + ([f"instance={args.instance}"] if args.instance else [])
    try:
        cfg = config_mod.load(args.config, overrides=overrides)
    except config_mod.ConfigError as exc:
        print(f"mdpipe publisher: {exc}", file=sys.stderr)
        return 2
    # The supervisor's choice (exported to its children) wins over the file's.
    logs.setup_child(cfg.supervisor.log_format, cfg.supervisor.log_level)
    if not cfg.publisher.enabled:
        log.info("publisher.enabled is false: nothing to do")
        return 0
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    gc.freeze()  # what exists now lives forever: keep the collector from walking it
    try:
        final = run_publisher(cfg, stop)
    except WriterAliveError as exc:
        log.error("another publisher runs for instance %s: %s", cfg.instance, exc)
        return 1
    log.info("stopped: %s", ", ".join(f"{k}={v}" for k, v in final.items() if v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
