"""The ingest loop of one shard: its WebSocket connections, books and trades into two rings.

The loop does the I/O, the timing, the counters and the rings; every rule of the exchange
(routes, parsing, book sync, recovery, REST policy, rollover de-duplication) comes from the
feed's venue package (`mdpipe.venues`). One thread owns every socket (a selector over the connections' sockets), both ring
writers and the counters, so each ring keeps a single writer and nothing on the hot path
takes a lock. Blocking work — WebSocket handshakes and REST snapshots — runs on helper
threads that hand their results back through an Inbox the selector watches.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mdpipe import config as C
from mdpipe.affinity import pinned_core
from mdpipe.candles import CandleBuilder, parse_interval
from mdpipe.candles import ring_name as candle_ring_name
from mdpipe.ingest import runtime
from mdpipe.ingest.backoff import Backoff
from mdpipe.ingest.connection import CONTROL, NOTHING, Connected, Connection, ConnectionLost
from mdpipe.ingest.control import ControlError, ControlRequest, ControlServer, socket_path
from mdpipe.ingest.counters import COUNTERS, Counters
from mdpipe.ingest.deadletter import DeadLetter
from mdpipe.ingest.inbox import Inbox
from mdpipe.ingest.rest import SnapshotFetcher, SnapshotReply, SnapshotRequest
from mdpipe.ingest.symbolbook import SymbolBook
from mdpipe.ingest.tickers import TickerState
from mdpipe.instrument import Instrument
from mdpipe.limits import derived_capacity, ingest_symbol_slots
from mdpipe.record.tapes import open_recorder
from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter
from mdpipe.venues import make_venue
from mdpipe.venues.base import (
    DEPTH,
    MARK,
    TICKER,
    TRADE,
    Ack,
    Alive,
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    FetchSnapshot,
    MarkPrice,
    RoutePlan,
    ServerShutdown,
    SnapshotStatus,
    Ticker,
    Trade,
    Trades,
)
from mdpipe.venues.errors import FeedError
from mdpipe.venues.pacing import MessagePacer

TICK = 0.05  # seconds between housekeeping passes (timeouts, snapshots, heartbeats, gauges)
# A rollover's old connection stays open at least this long after its replacement is up (its
# frames in flight arrive), and at most this long if the replacement never catches up.
HANDOVER_GRACE = 1.0
HANDOVER_MAX = 10.0
# Diffs buffered for a snapshot are kept this long (the REST timeout plus a stale snapshot's
# margin); older ones precede any snapshot still to come.
BUFFER_KEEP = 30.0
_MS = 1_000_000
_SAMPLE = 300  # characters of a bad frame quoted in the log


def ring_names(feed: str, shard: int) -> tuple[str, str]:
    """(books ring, trades ring) of ingest shard `shard` of feed `feed`."""
    return f"books.{feed}.{shard}", f"trades.{feed}.{shard}"


def tickers_ring_name(feed: str, shard: int) -> str:
    """The ticker ring of ingest shard `shard` of feed `feed`."""
    return f"tickers.{feed}.{shard}"


def dead_letter_path(cfg: C.Config, feed: str, shard: int) -> Path:
    """Where a shard keeps the frames it could not use."""
    return Path(cfg.supervisor.dead_letter_dir) / f"{cfg.instance}.{feed}.{shard}.jsonl"


class Shard:
    """State of one ingest shard; `run()` loops until `stop` is set."""

    def __init__(
        self,
        cfg: C.Config,
        feed: C.FeedConfig,
        shard: int,
        core: int,
        symbols: list[str],
        stop: threading.Event,
    ) -> None:
        self.cfg, self.feed, self.shard, self.core = cfg, feed, shard, core
        self.symbols = list(symbols)
        self.stop = stop
        self.log = logging.getLogger(f"mdpipe.ingest.{feed.name}.{shard}")
        self.venue = venue = make_venue(feed, self.symbols)
        self.instruments = self._instruments()
        books_ring, trades_ring = ring_names(feed.name, shard)
        mode = C.segment_mode(cfg)
        exchange = venue.exchange
        max_symbols = ingest_symbol_slots(len(symbols))  # room for runtime subscriptions
        self.books_w = RingWriter.create(
            cfg.instance,
            books_ring,
            "book",
            symbols=self.symbols,
            instruments=self.instruments,
            capacity=cfg.shm.book_capacity,
            depth=cfg.shm.depth,
            max_symbols=max_symbols,
            exchange=exchange,
            counters=COUNTERS,
            mode=mode,
            group=cfg.shm.group,
        )
        try:
            self.trades_w = RingWriter.create(
                cfg.instance,
                trades_ring,
                "trade",
                symbols=self.symbols,
                instruments=self.instruments,
                capacity=cfg.shm.trade_capacity,
                max_symbols=max_symbols,
                exchange=exchange,
                mode=mode,
                group=cfg.shm.group,
            )
        except BaseException:
            self.books_w.close()
            raise
        self.extra_writers: list[RingWriter] = []
        try:
            self._create_derived_rings(mode, exchange, max_symbols)
        except BaseException:
            for w in self.extra_writers:
                w.close()
            self.trades_w.close()
            self.books_w.close()
            raise
        self.ctr = Counters(self.books_w)
        self.recorder = open_recorder(cfg, exchange, feed.name, shard)  # None unless [record]
        self.dead = DeadLetter(dead_letter_path(cfg, feed.name, shard))
        self._reported: set[str] = set()
        self.inbox = Inbox()
        rest_budget = getattr(venue, "rest_budget", None)
        self.fetcher = SnapshotFetcher(
            self.inbox,
            budget=rest_budget() if rest_budget else None,
            weight_header=getattr(venue, "weight_header", ""),
        )
        self.parser = venue.parser
        self.books = {
            sym: SymbolBook(
                sym,
                i,
                venue.book_sync(sym),
                self.books_w,
                self.ctr,
                Backoff(feed.reconnect_initial, feed.reconnect_max),
                self._report,
                self.log,
            )
            for i, sym in enumerate(self.symbols)
        }
        self.trade_ids = {sym: i for i, sym in enumerate(self.symbols)}
        self.last_trade_id = [0] * len(self.symbols)  # per symbol id: the last trade committed
        self.overlap = False  # a rollover is under way: two sockets carry the same streams
        self.plans: dict[str, RoutePlan] = {}
        self.outbox: dict[str, deque[bytes]] = {}  # frames waiting for the route's pacer
        self.pacers: dict[str, MessagePacer] = {}
        self.conns = self._plan()
        self.by_name = {c.name: c for c in self.conns}
        self.depth_route = {sym: c for c in self.conns for sym in c.depth_symbols}
        self._next_forget = 0.0
        self.removed: set[str] = set()  # unsubscribed at runtime: their late frames are dropped
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.inbox, selectors.EVENT_READ, None)
        self.control: ControlServer | None = None
        try:
            path = socket_path(cfg.instance, feed.name, shard)
            self.control = ControlServer(path, self.inbox, self._check_request)
        except (OSError, ControlError) as exc:
            # Market data flows without it; only runtime subscriptions are unavailable.
            self.log.error("no control socket (mdpipe subscribe will not reach it): %s", exc)
        self.started_ns = time.time_ns()
        self._next_stale_check = 0

    # ----- setup --------------------------------------------------------------------------

    def _create_derived_rings(self, mode: int, exchange: str, max_symbols: int) -> None:
        """The ticker ring (feed.tickers) and one candle ring per feed.candles interval."""
        cfg, feed = self.cfg, self.feed
        common = {
            "symbols": self.symbols,
            "instruments": self.instruments,
            "max_symbols": max_symbols,
            "exchange": exchange,
            "mode": mode,
            "group": cfg.shm.group,
        }
        capacity = derived_capacity(len(self.symbols), cfg.shm.trade_capacity)
        self.tickers: TickerState | None = None
        if feed.tickers and getattr(self.venue, "tickers", False):
            w = RingWriter.create(
                cfg.instance,
                tickers_ring_name(feed.name, self.shard),
                "ticker",
                capacity=capacity,
                **common,
            )
            self.extra_writers.append(w)
            self.tickers = TickerState(w, max_symbols)  # every id, runtime subscriptions too
        self.candles: list[CandleBuilder] = []
        start_ns = time.time_ns()
        for interval in feed.candles:
            w = RingWriter.create(
                cfg.instance,
                candle_ring_name(interval, feed.name, self.shard),
                "candle",
                capacity=capacity,
                **common,
            )
            self.extra_writers.append(w)
            grace = int(feed.candle_grace * 1e9)
            self.candles.append(
                CandleBuilder(w, parse_interval(interval), max_symbols, start_ns, grace)
            )

    def _instruments(self) -> dict[str, Instrument]:
        """The normalized instrument of each symbol the venue can name, for the symbol tables."""
        found = {}
        for sym in self.symbols:
            try:
                found[sym] = self.venue.instrument(sym)
            except ValueError as exc:
                self.log.warning("%s: %s; readers find it by its venue name only", sym, exc)
        return found

    def _plan(self) -> list[Connection]:
        feed = self.feed
        conns = []
        for plan in self.venue.plan():
            self.plans[plan.name] = plan
            self.outbox[plan.name] = deque()
            if plan.send_rate:
                self.pacers[plan.name] = MessagePacer(plan.send_rate)
            backoff = Backoff(feed.reconnect_initial, feed.reconnect_max)
            conns.append(Connection(plan.name, plan.url, dict(plan.streams), backoff))
        return conns

    # ----- bad input ----------------------------------------------------------------------

    def _report(self, kind: str, error: str, raw: bytes | None) -> None:
        """Dead-letter, count and (once per kind) log a frame that could not be used. The
        count comes after the file write: a counter never announces a frame not yet kept."""
        ctr = self.ctr
        if raw is not None:
            try:
                self.dead.write(kind, error, raw)
                ctr.arr[ctr.dead_lettered] += 1
            except OSError as exc:
                ctr.inc("dead_letter_errors")
                if "dead_letter_errors" not in self._reported:
                    self._reported.add("dead_letter_errors")
                    self.log.error("cannot write the dead-letter file %s: %s", self.dead.path, exc)
        ctr.inc(f"err_{kind}"[:31])
        if kind not in self._reported:
            self._reported.add(kind)
            sample = ""
            if raw is not None:
                text = raw.decode("utf-8", "backslashreplace")
                sample = f"; sample: {text[:_SAMPLE]}{'...' if len(text) > _SAMPLE else ''}"
            self.log.warning(
                "bad input (%s): %s%s (counted as err_%s, kept in %s; not logged again)",
                kind,
                error,
                sample,
                kind,
                self.dead.path,
            )

    def _bad_frame(self, exc: FeedError, raw: bytes) -> None:
        self._report(exc.kind, exc.detail, raw)
        self.ctr.arr[self.ctr.parse_errors] += 1

    # ----- frames -------------------------------------------------------------------------

    def _on_frame(self, conn: Connection, raw: bytes, recv_ns: int) -> None:
        """Parse one data frame and route its event: the hot path."""
        arr = self.ctr.arr
        ctr = self.ctr
        arr[ctr.frames] += 1
        try:
            ev = self.parser.parse(raw)
        except FeedError as exc:
            self._bad_frame(exc, raw)
            return
        t = ev.__class__
        if t is DepthDiff:
            arr[ctr.depth_diffs] += 1
            sb = self.books.get(ev.symbol)
            if sb is None:
                self._unknown_symbol(ev.symbol, raw)
                return
            if conn.unseen:
                conn.unseen.discard((ev.symbol, DEPTH))
            if self.overlap:
                ev, duplicate = self.venue.overlap_diff(conn, sb.sync, ev)
                if ev is None:
                    if duplicate:
                        arr[ctr.duplicates] += 1
                    return
            sb.on_diff(ev, recv_ns, raw)
        elif t is Trade:
            self._trade(conn, ev, recv_ns, raw)
        elif t is Trades:
            for trade in ev.trades:
                self._trade(conn, trade, recv_ns, raw)
        elif t is ServerShutdown:
            ctr.inc("server_shutdowns")
            if conn.successor is None and conn.retiring is None:
                self._roll_over(conn, "the server announced a shutdown")
            elif conn.retiring is not None:
                self._lost(conn, "serverShutdown on the replacement too", backoff=False)
        elif t is DepthSnapshot:
            self._in_band_snapshot(conn, ev, recv_ns, raw)
        elif t is MarkPrice:
            if conn.unseen:
                conn.unseen.discard((ev.symbol, MARK))
            if self.tickers is not None and ev.values:
                self._ticker(ev, recv_ns, raw)
        elif t is Ticker:
            if conn.unseen:
                conn.unseen.discard((ev.symbol, TICKER))
            if self.tickers is not None:
                self._ticker(ev, recv_ns, raw)
        elif t is Ack:
            if not ev.ok:
                self._rejected(conn, ev, raw)
        elif t is BookTicker or t is Alive:
            pass  # a pong, or a top of book not subscribed: harmless

    def _ticker(self, ev: MarkPrice | Ticker, recv_ns: int, raw: bytes) -> None:
        """Merge a venue's ticker fields into the symbol's state and commit it."""
        sid = self.trade_ids.get(ev.symbol)
        if sid is None:
            self._unknown_symbol(ev.symbol, raw)
            return
        self.tickers.apply(sid, ev, recv_ns)
        self.ctr.arr[self.ctr.tickers] += 1

    def _trade(self, conn: Connection, ev: Trade, recv_ns: int, raw: bytes) -> None:
        """Commit one trade (once, in order, during a rollover)."""
        arr, ctr = self.ctr.arr, self.ctr
        arr[ctr.trades] += 1
        sid = self.trade_ids.get(ev.symbol)
        if sid is None:
            self._unknown_symbol(ev.symbol, raw)
            return
        if conn.unseen:
            conn.unseen.discard((ev.symbol, TRADE))
        if self.overlap:
            admit, duplicate = self.venue.overlap_trade(conn, self.last_trade_id[sid], ev)
            if duplicate:
                arr[ctr.duplicates] += 1
            if not admit:
                return
        self.last_trade_id[sid] = ev.trade_id
        maker = ev.buyer_is_maker
        ts_ns = ev.trade_time * _MS
        self.trades_w.commit_trade(
            sid,
            L.FLAG_BUYER_MAKER if maker else 0,
            ts_ns,
            ev.event_time * _MS,
            recv_ns,
            ev.trade_id,
            ev.first_trade_id,
            ev.last_trade_id,
            ev.price,
            ev.qty,
            -1 if maker else 1,
        )
        for builder in self.candles:
            builder.on_trade(
                sid,
                ts_ns,
                recv_ns,
                ev.trade_id,
                ev.first_trade_id,
                ev.last_trade_id,
                ev.price,
                ev.qty,
                not maker,
            )

    def _in_band_snapshot(
        self, conn: Connection, snap: DepthSnapshot, recv_ns: int, raw: bytes
    ) -> None:
        """A venue that sends its book's snapshot on the stream (at subscribe, after trouble)."""
        arr, ctr = self.ctr.arr, self.ctr
        sb = self.books.get(snap.symbol)
        if sb is None:
            self._unknown_symbol(snap.symbol, raw)
            return
        if conn.unseen:
            conn.unseen.discard((snap.symbol, DEPTH))
        arr[ctr.snapshots] += 1
        status = sb.on_snapshot(snap, recv_ns, raw)
        if status is SnapshotStatus.EXACT:
            sb.backoff.reset()
        elif status is not SnapshotStatus.UNNEEDED:
            ctr.inc("snapshots_rejected")
            self.log.info(
                "%s: snapshot refused (%s): %s", snap.symbol, status.value, sb.sync.reason
            )

    def _rejected(self, conn: Connection, ack: Ack, raw: bytes) -> None:
        """The venue refused a request (a subscription): its streams will never deliver.

        A request named after the stream it subscribes marks that stream as faulted, so the
        silence check does not report it a second time.
        """
        conn.faulted.update(key for key, name in conn.streams.items() if name == ack.req_id)
        self._report("request_rejected", f"{conn.name}: {ack.op} {ack.req_id}: {ack.message}", raw)
        self.log.error(
            "%s: the venue refused %s %s: %s",
            conn.name,
            ack.op or "a request",
            ack.req_id,
            ack.message,
        )
        self.ctr.arr[self.ctr.stream_faults] += 1

    def _unknown_symbol(self, symbol: str, raw: bytes) -> None:
        if symbol in self.removed:
            return  # in flight when it was unsubscribed
        self._report("unknown_symbol", f"{symbol} is not one of this shard's symbols", raw)
        self.ctr.arr[self.ctr.parse_errors] += 1

    # ----- connections --------------------------------------------------------------------

    def _adopt(self, done: Connected) -> None:
        conn = self.by_name.get(done.name)
        if conn is None or done.attempt != conn.attempt or self.stop.is_set():
            if done.ws is not None:
                with contextlib.suppress(Exception):
                    done.ws.shutdown()
            return
        now = time.monotonic()
        if done.ws is None:
            delay = conn.schedule_retry(now)
            self.ctr.arr[self.ctr.reconnects] += 1  # every failed attempt is retried
            self.ctr.arr[self.ctr.connect_failures] += 1
            self.log.warning(
                "%s: cannot connect to %s: %s; retrying in %.2f s",
                conn.name,
                _where(conn.url),
                done.error,
                delay,
            )
            return
        conn.attach(done.ws, now)
        if conn.retiring is not None:
            # The route's silence clock runs from its last frame on either socket.
            conn.retiring.note_frames(now)
            conn.last_frame = conn.retiring.last_frame
        self.sel.register(conn.sock, selectors.EVENT_READ, conn)
        conn.last_ping = now
        self.outbox[conn.name].clear()
        if conn.name in self.pacers:
            self.pacers[conn.name].reset()
        self._queue(conn, self.plans[conn.name].subscribe)
        self._queue(conn, runtime.resubscribe_frames(self.venue, self.plans[conn.name], conn))
        if not self._flush(conn, now):
            return
        self._gauge_connections()
        self.log.info(
            "%s: connected to %s (%d streams)", conn.name, _where(conn.url), len(conn.streams)
        )

    def _queue(self, conn: Connection, frames: tuple[bytes, ...] | list[bytes]) -> None:
        """Queue frames for a route, sent in order as fast as its venue allows."""
        self.outbox[conn.name].extend(frames)

    def _flush(self, conn: Connection, now: float) -> bool:
        """Send what the route's pacer allows now; False if the connection was lost."""
        box = self.outbox[conn.name]
        pacer = self.pacers.get(conn.name)
        while box and conn.up:
            if pacer is not None:
                if pacer.wait(now) > 0:
                    return True
                pacer.sent(now)
            if not self._send(conn, box.popleft()):
                return False
        return True

    def _send(self, conn: Connection, frame: bytes) -> bool:
        """Send one frame on a route; a failed send drops the connection (False)."""
        try:
            conn.send(frame)
        except ConnectionLost as exc:
            self._lost(conn, f"connection lost while sending ({exc})")
            return False
        return True

    def _gauge_connections(self) -> None:
        """Routes with a live socket (during a rollover, the old one counts for its route)."""
        self.ctr.arr[self.ctr.g_connections] = sum(
            c.up or (c.retiring is not None and c.retiring.up) for c in self.conns
        )

    def _unregister(self, conn: Connection) -> None:
        if conn.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn.sock)

    def _reset_books(self, conn: Connection) -> None:
        now_ns = time.time_ns()
        for sym in conn.depth_symbols:
            self.books[sym].reset(now_ns)

    def _lost(self, conn: Connection, why: str, *, backoff: bool = True) -> None:
        """Drop a connection, schedule its reconnect, and unsync the books it carried."""
        if conn.successor is not None:
            self._retiring_lost(conn, why)
            return
        self._unregister(conn)
        conn.drop()
        self._gauge_connections()
        self.ctr.arr[self.ctr.reconnects] += 1
        now = time.monotonic()
        if backoff:
            delay = conn.schedule_retry(now)
        else:
            conn.connecting = False
            conn.next_attempt, delay = now, 0.0
        carried = conn.retiring is not None and conn.retiring.up
        if not carried:  # during a rollover the old socket still carries the books
            self._reset_books(conn)
        self.log.warning(
            "%s: %s; reconnecting in %.2f s%s",
            conn.name,
            why,
            delay,
            f", then resyncing {len(conn.depth_symbols)} book(s)"
            if conn.depth_symbols and not carried
            else "",
        )

    # ----- make-before-break rollover -----------------------------------------------------

    def _roll_over(self, conn: Connection, why: str) -> None:
        """Open a replacement for a live connection while the old socket keeps delivering."""
        old = conn.hand_over()
        self.sel.modify(old.sock, selectors.EVENT_READ, old)
        self.overlap = True
        conn.start_connect(self.inbox)
        self.log.info("%s: %s; opening its replacement before closing it", conn.name, why)

    def _check_handover(self, conn: Connection, now: float) -> None:
        """Close a rollover's old socket once the replacement caught up on all it delivered."""
        old = conn.retiring
        if old is None or not conn.up:
            return  # the old socket carries on until its replacement is up (or it is cut)
        up_for = now - conn.connected_at
        behind = old.delivered - conn.caught_up
        if up_for >= HANDOVER_MAX or (up_for >= HANDOVER_GRACE and not behind):
            self._retire(conn, behind, "closed")

    def _retire(self, conn: Connection, behind: set[tuple[str, str]], how: str) -> None:
        """End a rollover: the replacement alone carries the route from now on."""
        old = conn.retiring
        conn.retiring = None
        if old.up:
            self._unregister(old)
            old.close()
        conn.settle_until = time.monotonic() + HANDOVER_MAX
        self._gauge_connections()
        if behind:
            # Streams the new socket never caught up on: their books resync on their next
            # diff by the usual rules; trades it held back meanwhile may be missing.
            self.ctr.arr[self.ctr.rollover_timeouts] += 1
            streams = ", ".join(f"{s}@{k}" for s, k in sorted(behind))
            self.log.warning(
                "%s: old connection %s before the new one caught up on %s", conn.name, how, streams
            )
        else:
            self.ctr.arr[self.ctr.rollovers] += 1
            self.log.info("%s: handed over to the new connection, nothing lost", conn.name)

    def _end_overlap(self) -> None:
        """Leave the rollover rules once no route is rolling over or settling."""
        self.overlap = any(c.retiring is not None or c.settle_until for c in self.conns)

    def _retiring_lost(self, old: Connection, why: str) -> None:
        """A rollover's old socket closed (the server cut it, or it failed)."""
        self._unregister(old)
        old.drop()
        conn = old.successor
        if conn.up:
            self._retire(conn, old.delivered - conn.caught_up, f"lost ({why})")
            return
        conn.retiring = None
        self._end_overlap()
        self._gauge_connections()
        self.ctr.arr[self.ctr.reconnects] += 1
        self._reset_books(conn)
        self.log.warning(
            "%s: %s before its replacement was up; resyncing %d book(s) once it is",
            conn.name,
            why,
            len(conn.depth_symbols),
        )

    def _read(self, conn: Connection) -> None:
        """Take what a ready connection holds and handle each whole frame in it, in order.

        A frame's receive time is read right after the frame is taken from the connection,
        before it is parsed: the same moment whether it came alone or with others in one read.
        """
        try:
            conn.fill()
        except ConnectionLost as exc:
            self._lost(conn, f"connection lost ({exc})")
            return
        reader = conn.reader
        read, recorder, on_frame, time_ns = conn.read, self.recorder, self._on_frame, time.time_ns
        while True:
            try:
                raw = read()
            except ConnectionLost as exc:
                self._lost(conn, f"connection lost ({exc})")
                return
            if raw is NOTHING:
                return
            recv_ns = time_ns()
            if raw is not CONTROL:
                if recorder is not None:
                    recorder.frame(raw, recv_ns)
                conn.frames += 1
                if conn.frames == 1:
                    conn.backoff.reset()  # the server delivers: the next failure starts over
                on_frame(conn, raw, recv_ns)
                if conn.reader is not reader:
                    # The frame's handling moved the socket to a rollover's old twin, whose
                    # buffered frames are read on (the selector cannot see them), or dropped it.
                    conn = conn.retiring
                    if conn is None or conn.reader is not reader:
                        return
                    read = conn.read

    # ----- snapshots ----------------------------------------------------------------------

    def _on_reply(self, reply: SnapshotReply) -> None:
        sb = self.books.get(reply.symbol)
        if sb is None:
            return
        sb.inflight = False
        if reply.epoch != sb.epoch:
            return  # the book was reset since this was asked for: a fresher one is needed
        ctr, arr, log = self.ctr, self.ctr.arr, self.log
        now = time.monotonic()
        status = reply.status
        sym = reply.symbol
        if status == 200:
            if self.recorder is not None:
                self.recorder.frame(reply.body, time.time_ns())
            try:
                snap = self.venue.parse_snapshot(reply.body)
            except FeedError as exc:
                arr[ctr.snapshot_errors] += 1
                self._report(f"snapshot_{exc.kind}", exc.detail, reply.body)
                sb.due = now + sb.backoff.next_delay()
                return
            arr[ctr.snapshots] += 1
            sb.blocked = 0
            result = sb.on_snapshot(snap, time.time_ns())
            if result is SnapshotStatus.SYNCED or result is SnapshotStatus.WAITING:
                sb.backoff.reset()
                log.info(
                    "%s: snapshot %d loaded (%s, %.0f ms)",
                    sym,
                    snap.last_update_id,
                    "synced" if result is SnapshotStatus.SYNCED else "waiting for the next diff",
                    reply.elapsed * 1e3,
                )
            elif result is not SnapshotStatus.UNNEEDED:
                ctr.inc("snapshots_rejected")
                sb.due = now + sb.backoff.next_delay()
                log.info(
                    "%s: snapshot refused (%s): %s; fetching another",
                    sym,
                    result.value,
                    sb.sync.reason,
                )
            return
        arr[ctr.snapshot_errors] += 1
        verdict = self.venue.rest_verdict(
            status, reply.retry_after, sb.backoff.next_delay(), sb.blocked, reply.error
        )
        if verdict.counter:
            ctr.inc(verdict.counter)
        sb.due = now + verdict.wait
        if verdict.blocked:
            sb.blocked += 1
        if verdict.message:
            log.log(verdict.level, "%s: %s", sym, verdict.message)

    def _request_snapshots(self, now: float) -> None:
        """Start the recovery of every book whose sync rules ask for one."""
        for sym, sb in self.books.items():
            if sb.wants_snapshot and now >= sb.due:
                how = self.venue.recovery(sym)
                if how.__class__ is FetchSnapshot:
                    sb.inflight = True
                    self.fetcher.request(SnapshotRequest(sym, how.url, sb.epoch))
                    continue
                conn = self.depth_route[sym]
                if not conn.up:
                    continue  # the reconnect resubscribes everything
                # In-band: ask again after a while if the snapshot does not come.
                sb.due = now + max(1.0, sb.backoff.next_delay())
                self.log.info("%s: asking %s for a fresh snapshot", sym, conn.name)
                self._queue(conn, how.frames)
                self._flush(conn, now)

    # ----- runtime subscriptions ---------------------------------------------------------

    def _check_request(self, op: str, symbols: list[str]) -> tuple[str, bool] | None:
        """Blocking checks on the control thread: does the exchange list these symbols?"""
        if op == "list":
            return None
        if not hasattr(self.venue, "symbol_streams"):
            return (
                f"feed {self.feed.name} ({self.venue.exchange}) cannot change its symbols at "
                "runtime; change the config's symbols and restart",
                False,
            )
        if op != "subscribe":
            return None
        return runtime.probe_symbols(self.venue, symbols)

    def _on_control(self, req: ControlRequest) -> dict[str, Any]:
        """Apply a control request on the loop thread (the rings' only writer)."""
        try:
            if req.op == "list":
                return {"ok": True, "symbols": sorted(self.books)}
            if req.op == "subscribe":
                return {"ok": True, "subscribed": runtime.subscribe(self, req.symbols)}
            return {"ok": True, "unsubscribed": runtime.unsubscribe(self, req.symbols)}
        except runtime.Refused as exc:
            return {"ok": False, "error": str(exc)}

    def new_book(self, symbol: str, sid: int) -> SymbolBook:
        """A book for a symbol subscribed at runtime."""
        feed = self.feed
        return SymbolBook(
            symbol,
            sid,
            self.venue.book_sync(symbol),
            self.books_w,
            self.ctr,
            Backoff(feed.reconnect_initial, feed.reconnect_max),
            self._report,
            self.log,
        )

    # ----- housekeeping -------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        feed = self.feed
        rollover_after = feed.rollover_after
        for conn in self.conns:
            if conn.settle_until and now >= conn.settle_until:
                conn.settle_until = 0.0
                self._end_overlap()
            conn.note_frames(now)
            old = conn.retiring
            if old is not None:
                old.note_frames(now)
            if old is not None and (conn.up or not self._lost_if_silent(old, now)):
                self._check_handover(conn, now)
            if conn.up:
                if self._lost_if_silent(conn, now):
                    continue
                if self.outbox[conn.name] and not self._flush(conn, now):
                    continue
                plan = self.plans[conn.name]
                if plan.ping and now - conn.last_ping >= plan.ping_interval:
                    conn.last_ping = now
                    if not self._send(conn, plan.ping):
                        continue
                if (
                    rollover_after
                    and conn.retiring is None
                    and now - conn.connected_at > rollover_after
                ):
                    age = now - conn.connected_at
                    self._roll_over(conn, f"connection {age:,.0f} s old")
                    continue
                if conn.unseen and now - conn.connected_at > feed.stream_timeout:
                    self._stream_faults(conn, now)
            elif not conn.connecting and now >= conn.next_attempt and not self.stop.is_set():
                conn.start_connect(self.inbox)
        self._request_snapshots(now)
        if now >= self._next_forget:
            self._next_forget = now + 1.0
            cutoff = time.time_ns() - int(BUFFER_KEEP * 1e9)
            for sb in self.books.values():
                if sb.sync.buffered > 16:
                    sb.forget_older(cutoff)
        budget = self.fetcher.budget
        if budget is not None:
            arr = self.ctr.arr
            arr[self.ctr.g_rest_weight] = budget.used
            arr[self.ctr.rest_paced_ms] = int(self.fetcher.paced_seconds * 1000)
        self._tick_derived()
        self.books_w.heartbeat()
        self.trades_w.heartbeat()

    def _tick_derived(self) -> None:
        """Close quiet candles, gauge stale tickers, keep the derived rings' heartbeats."""
        now_ns = time.time_ns()
        arr, ctr = self.ctr.arr, self.ctr
        if self.candles:
            published = amended = dropped = 0
            for builder in self.candles:
                builder.on_clock(now_ns)
                published += builder.published
                amended += builder.amended
                dropped += builder.late_dropped
            arr[ctr.candles] = published
            arr[ctr.candles_amended] = amended
            arr[ctr.candles_late_dropped] = dropped
        if self.tickers is not None and now_ns >= self._next_stale_check:
            self._next_stale_check = now_ns + 1_000_000_000
            limit = now_ns - int(self.feed.ticker_timeout * 1e9)
            t, start = self.tickers, self.started_ns
            sids = self.trade_ids.values()  # the symbols subscribed now
            last, funding = t.last_update_ns, t.last_funding_ns
            arr[ctr.g_tickers_stale] = sum(1 for i in sids if max(last[i], start) < limit)
            arr[ctr.g_funding_stale] = sum(1 for i in sids if 0 < funding[i] < limit)
        for w in self.extra_writers:
            w.heartbeat()

    def _lost_if_silent(self, conn: Connection, now: float) -> bool:
        """Drop a socket that has delivered nothing for silence_timeout; True if it was."""
        quiet = now - conn.last_frame
        if quiet <= self.feed.silence_timeout:
            return False
        self.ctr.arr[self.ctr.silences] += 1
        self._lost(conn, f"no data for {quiet:.1f} s (silent feed)")
        return True

    def _stream_faults(self, conn: Connection, now: float) -> None:
        """Report each subscribed stream that never delivered: a wrong route, not a quiet market
        (the venue tells which silent streams are only a quiet market)."""
        quiet = self.venue.quiet_streams(conn.streams, conn.unseen)
        for key in sorted(conn.unseen - conn.faulted - quiet):
            conn.faulted.add(key)
            self.ctr.arr[self.ctr.stream_faults] += 1
            self.log.error(
                "%s: stream %s delivered nothing in %.0f s since connecting to %s: "
                "subscribed on the wrong route, or the exchange does not serve it",
                conn.name,
                conn.streams[key],
                now - conn.connected_at,
                _where(conn.url),
            )

    # ----- main loop ----------------------------------------------------------------------

    def run(self) -> None:
        """Connect, then read and publish until stop is set."""
        arr, ctr = self.ctr.arr, self.ctr
        arr[ctr.g_connections_expected] = len(self.conns)
        arr[ctr.g_books_total] = len(self.books)
        arr[ctr.g_core] = self.core
        pinned = pinned_core()
        self.ctr.set("g_pinned", int(pinned == self.core))
        self.log.info(
            "shard %s/%d: %d symbol(s) on %d connection(s), %s to core %d, rings %s and %s",
            self.feed.name,
            self.shard,
            len(self.symbols),
            len(self.conns),
            "pinned" if pinned == self.core else "NOT pinned",
            self.core,
            self.books_w.ring,
            self.trades_w.ring,
        )
        stop = self.stop
        select = self.sel.select
        next_tick = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                self._tick(now)
                next_tick = now + TICK
            for key, _ in select(next_tick - now):
                conn = key.data
                if conn is None:
                    for item in self.inbox.drain():
                        if isinstance(item, SnapshotReply):
                            self._on_reply(item)
                        elif isinstance(item, ControlRequest):
                            item.reply.put(self._on_control(item))
                        else:
                            self._adopt(item)
                elif conn.up:
                    self._read(conn)

    def close(self) -> None:
        """Unpublish the books, close connections, helpers and the rings (segments are kept)."""
        if self.control is not None:
            self.control.close()
        now_ns = time.time_ns()
        for sb in self.books.values():
            sb.invalidate(now_ns)
        for conn in self.conns:
            for sock in (conn, conn.retiring):
                if sock is not None:
                    self._unregister(sock)
                    sock.close()
        self.fetcher.close()
        self.sel.close()
        self.inbox.close()
        self.dead.close()
        if self.recorder is not None:
            self.recorder.close()  # writes what is queued and finishes the open tape
        self.ctr.arr[self.ctr.g_connections] = 0
        for builder in self.candles:
            builder.flush_open()
        for w in self.extra_writers:
            w.close()
        self.trades_w.close()
        self.books_w.close()


def _where(url: str) -> str:
    """scheme://host/path of a URL, without the (long) stream list."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.hostname}{f':{p.port}' if p.port else ''}{p.path}"


def run_shard(
    cfg: C.Config,
    feed: C.FeedConfig,
    shard: int,
    core: int,
    symbols: list[str],
    stop: threading.Event | None = None,
) -> None:
    """Run one ingest shard until `stop` is set (forever when None); writers are closed, not unlinked."""
    sh = Shard(cfg, feed, shard, core, symbols, stop or threading.Event())
    try:
        sh.run()
    finally:
        sh.close()
        sh.log.info("stopped")
