"""The ingest loop of one shard: its WebSocket connections, books and trades into two rings.

One thread owns every socket (a selector over the connections' sockets), both ring
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
from pathlib import Path
from urllib.parse import urlsplit

from mdpipe import config as C
from mdpipe.affinity import pinned_core
from mdpipe.feeds.binance import (
    BinanceParser,
    BookTicker,
    DepthDiff,
    FeedError,
    MarkPrice,
    ServerShutdown,
    Trade,
    parse_snapshot,
    plan_connections,
    snapshot_url,
)
from mdpipe.feeds.binance_sync import SnapshotStatus
from mdpipe.ingest.backoff import Backoff
from mdpipe.ingest.connection import CONTROL, Connected, Connection, ConnectionLost
from mdpipe.ingest.counters import COUNTERS, Counters
from mdpipe.ingest.deadletter import DeadLetter
from mdpipe.ingest.inbox import Inbox
from mdpipe.ingest.rest import SnapshotFetcher, SnapshotReply, SnapshotRequest
from mdpipe.ingest.symbolbook import SymbolBook
from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter

TICK = 0.05  # seconds between housekeeping passes (timeouts, snapshots, heartbeats, gauges)
# A rollover's old connection stays open at least this long after its replacement is up (its
# frames in flight arrive), and at most this long if the replacement never catches up.
HANDOVER_GRACE = 1.0
HANDOVER_MAX = 10.0
_MS = 1_000_000
_SAMPLE = 300  # characters of a bad frame quoted in the log


def exchange_name(market: str) -> str:
    """The exchange field of the shard's segments."""
    return f"binance-{market}"


def ring_names(feed: str, shard: int) -> tuple[str, str]:
    """(books ring, trades ring) of ingest shard `shard` of feed `feed`."""
    return f"books.{feed}.{shard}", f"trades.{feed}.{shard}"


def dead_letter_path(cfg: C.Config, feed: str, shard: int) -> Path:
    """Where a shard keeps the frames it could not use."""
    return Path(cfg.supervisor.dead_letter_dir) / f"{cfg.instance}.{feed}.{shard}.jsonl"


def _stream_key(stream: str) -> tuple[str, str]:
    """'btcusdt@depth@0ms' -> ('BTCUSDT', 'depth'); 'btcusdt@aggTrade' -> ('BTCUSDT', 'trade');
    'btcusdt@markPrice@1s' -> ('BTCUSDT', 'mark')."""
    name, _, kind = stream.partition("@")
    if kind.startswith("depth"):
        return name.upper(), "depth"
    return name.upper(), "mark" if kind.startswith("markPrice") else "trade"


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
        books_ring, trades_ring = ring_names(feed.name, shard)
        mode = C.segment_mode(cfg)
        exchange = exchange_name(feed.market)
        max_symbols = max(256, len(symbols))
        self.books_w = RingWriter.create(
            cfg.instance,
            books_ring,
            "book",
            symbols=self.symbols,
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
                capacity=cfg.shm.trade_capacity,
                max_symbols=max_symbols,
                exchange=exchange,
                mode=mode,
                group=cfg.shm.group,
            )
        except BaseException:
            self.books_w.close()
            raise
        self.ctr = Counters(self.books_w)
        self.dead = DeadLetter(dead_letter_path(cfg, feed.name, shard))
        self._reported: set[str] = set()
        self.inbox = Inbox()
        self.fetcher = SnapshotFetcher(self.inbox)
        self.parser = BinanceParser(feed.market)
        self.books = {
            sym: SymbolBook(
                sym,
                i,
                feed.market,
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
        self.snapshot_urls = {
            sym: snapshot_url(feed.market, sym, feed.snapshot_limit, feed.rest_url)
            for sym in self.symbols
        }
        self.conns = self._plan()
        self.by_name = {c.name: c for c in self.conns}
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.inbox, selectors.EVENT_READ, None)

    # ----- setup --------------------------------------------------------------------------

    def _plan(self) -> list[Connection]:
        feed = self.feed
        planned = plan_connections(
            feed.market,
            self.symbols,
            depth=feed.depth_stream,
            trade=feed.trade_stream,
            book_ticker=False,  # subscribe only what is used
            ws_base=feed.ws_url,
            # Futures trades travel alone on /market: the 1 s mark price keeps a quiet
            # market's connection from looking dead and proves the route delivers.
            mark_price=feed.market == "futures",
        )
        conns = []
        for i, (url, streams) in enumerate(planned):
            route = urlsplit(url).path.strip("/").split("/")[0]
            conns.append(
                Connection(
                    f"{route}#{i}",
                    url,
                    {_stream_key(s): s for s in streams},
                    Backoff(feed.reconnect_initial, feed.reconnect_max),
                )
            )
        return conns

    # ----- bad input ----------------------------------------------------------------------

    def _report(self, kind: str, error: str, raw: bytes | None) -> None:
        """Count, dead-letter and (once per kind) log a frame that could not be used."""
        ctr = self.ctr
        ctr.inc(f"err_{kind}"[:31])
        if raw is not None:
            try:
                self.dead.write(kind, error, raw)
                ctr.arr[ctr.dead_lettered] += 1
            except OSError as exc:
                ctr.inc("dead_letter_errors")
                if "dead_letter_errors" not in self._reported:
                    self._reported.add("dead_letter_errors")
                    self.log.error("cannot write the dead-letter file %s: %s", self.dead.path, exc)
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
        self.ctr.arr[self.ctr.parse_errors] += 1
        self._report(exc.kind, exc.detail, raw)

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
                conn.unseen.discard((ev.symbol, "depth"))
            if self.overlap:
                ev = self._overlap_diff(conn, sb, ev)
                if ev is None:
                    return
            sb.on_diff(ev, recv_ns, raw)
        elif t is Trade:
            arr[ctr.trades] += 1
            sid = self.trade_ids.get(ev.symbol)
            if sid is None:
                self._unknown_symbol(ev.symbol, raw)
                return
            if conn.unseen:
                conn.unseen.discard((ev.symbol, "trade"))
            if self.overlap and not self._admit_overlap_trade(conn, sid, ev):
                return
            self.last_trade_id[sid] = ev.trade_id
            maker = ev.buyer_is_maker
            self.trades_w.commit_trade(
                sid,
                L.FLAG_BUYER_MAKER if maker else 0,
                ev.trade_time * _MS,
                ev.event_time * _MS,
                recv_ns,
                ev.trade_id,
                ev.first_trade_id,
                ev.last_trade_id,
                ev.price,
                ev.qty,
                -1 if maker else 1,
            )
        elif t is ServerShutdown:
            ctr.inc("server_shutdowns")
            if conn.successor is None and conn.retiring is None:
                self._roll_over(conn, "the server announced a shutdown")
            elif conn.retiring is not None:
                self._lost(conn, "serverShutdown on the replacement too", backoff=False)
        elif t is MarkPrice:
            if conn.unseen:
                conn.unseen.discard((ev.symbol, "mark"))
        elif t is BookTicker:
            pass  # not subscribed; harmless if a server sends it anyway

    def _overlap_diff(self, conn: Connection, sb: SymbolBook, d: DepthDiff) -> DepthDiff | None:
        """During a rollover, the diff to give the book, or None to drop it.

        Both sockets deliver the symbol's stream, possibly cut into different diffs. A diff
        the book already has is dropped; one that covers the book's update id is applied
        (as the next diff), from whichever socket has it first. The new socket's diffs that
        are ahead of the book are dropped: the old one delivers what lies in between, and the
        old one's are left to the usual rules (a real gap resyncs). For a while after the old
        socket closed, the new one's diffs still get the first two rules.
        """
        if conn.successor is None and conn.retiring is None and not conn.settle_until:
            return d  # a route not rolling over
        sync = sb.sync
        key = (d.symbol, "depth")
        if sync.synced:
            if d.last_id <= sync.last_update_id:
                if conn.retiring is not None:
                    conn.caught_up.add(key)
                self.ctr.arr[self.ctr.duplicates] += 1
                return None
            if sync.covers(d):
                if conn.retiring is not None:
                    conn.caught_up.add(key)
                elif conn.successor is not None and conn.successor.up:
                    conn.delivered.add(key)
                return sync.as_next(d)
        if conn.retiring is not None:
            return None  # the new socket, ahead of the book or while the old one rebuilds it
        return d  # the old socket, or a route whose old socket closed: a gap, or a rebuild

    def _admit_overlap_trade(self, conn: Connection, sid: int, t: Trade) -> bool:
        """During a rollover, commit each trade once, in trade id order (the same rule as diffs)."""
        if conn.successor is None and conn.retiring is None and not conn.settle_until:
            return True
        key = (t.symbol, "trade")
        last = self.last_trade_id[sid]
        if t.trade_id <= last:
            if conn.retiring is not None:
                conn.caught_up.add(key)
            self.ctr.arr[self.ctr.duplicates] += 1
            return False
        if conn.successor is not None:
            if conn.successor.up:
                conn.delivered.add(key)
            return True
        if conn.retiring is None:
            return True  # the old socket closed: what is not a duplicate is new
        if last and t.trade_id == last + 1:
            conn.caught_up.add(key)
            return True
        return False

    def _unknown_symbol(self, symbol: str, raw: bytes) -> None:
        self.ctr.arr[self.ctr.parse_errors] += 1
        self._report("unknown_symbol", f"{symbol} is not one of this shard's symbols", raw)

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
            conn.last_frame = conn.retiring.last_frame
        self.sel.register(conn.sock, selectors.EVENT_READ, conn)
        self._gauge_connections()
        self.log.info(
            "%s: connected to %s (%d streams)", conn.name, _where(conn.url), len(conn.streams)
        )

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
        """Read one frame (and any that TLS already decrypted) from a ready connection."""
        while True:
            try:
                raw = conn.read()
            except ConnectionLost as exc:
                self._lost(conn, f"connection lost ({exc})")
                return
            recv_ns = time.time_ns()
            if raw is not CONTROL:
                conn.frames += 1
                conn.last_frame = time.monotonic()
                if conn.frames == 1:
                    conn.backoff.reset()  # the server delivers: the next failure starts over
                self._on_frame(conn, raw, recv_ns)
            if not (conn.up and conn.pending()):
                return

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
            try:
                snap = parse_snapshot(reply.body)
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
        if status == 451:
            arr[ctr.rest_451] += 1
            slow = self.feed.reconnect_max
            sb.due = now + slow
            if not sb.blocked:
                log.error(
                    "%s: the REST API answered 451: this host is geo-blocked by the exchange; "
                    "the book stays unsynced (never published as exact); retrying every %.1f s",
                    sym,
                    slow,
                )
            sb.blocked += 1
        elif status in (429, 418):
            arr[ctr.rest_429 if status == 429 else ctr.rest_418] += 1
            wait = reply.retry_after if reply.retry_after is not None else sb.backoff.next_delay()
            sb.due = now + wait
            log.warning(
                "%s: the REST API answered %d (%s); waiting %.1f s as asked",
                sym,
                status,
                "rate limited" if status == 429 else "IP banned for ignoring rate limits",
                wait,
            )
            sb.blocked += 1
        else:
            if status >= 500:
                arr[ctr.rest_5xx] += 1
            delay = sb.backoff.next_delay()
            sb.due = now + delay
            what = f"HTTP {status}" if status else reply.error
            log.warning("%s: snapshot failed (%s); retrying in %.2f s", sym, what, delay)

    def _request_snapshots(self, now: float) -> None:
        for sym, sb in self.books.items():
            if sb.wants_snapshot and now >= sb.due:
                sb.inflight = True
                self.fetcher.request(SnapshotRequest(sym, self.snapshot_urls[sym], sb.epoch))

    # ----- housekeeping -------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        feed = self.feed
        rollover_after = feed.rollover_after
        for conn in self.conns:
            if conn.settle_until and now >= conn.settle_until:
                conn.settle_until = 0.0
                self._end_overlap()
            old = conn.retiring
            if old is not None and (conn.up or not self._lost_if_silent(old, now)):
                self._check_handover(conn, now)
            if conn.up:
                if self._lost_if_silent(conn, now):
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
        self.books_w.heartbeat()
        self.trades_w.heartbeat()

    def _lost_if_silent(self, conn: Connection, now: float) -> bool:
        """Drop a socket that has delivered nothing for silence_timeout; True if it was."""
        quiet = now - conn.last_frame
        if quiet <= self.feed.silence_timeout:
            return False
        self.ctr.arr[self.ctr.silences] += 1
        self._lost(conn, f"no data for {quiet:.1f} s (silent feed)")
        return True

    def _stream_faults(self, conn: Connection, now: float) -> None:
        """Report each subscribed stream that never delivered: a wrong route, not a quiet market.

        A trade stream whose symbol's mark price arrives on the same connection is only a
        market where nothing traded yet: not a fault.
        """
        quiet = {(sym, "trade") for sym, kind in conn.streams if (sym, "mark") not in conn.unseen}
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
                        else:
                            self._adopt(item)
                elif conn.up:
                    self._read(conn)

    def close(self) -> None:
        """Unpublish the books, close connections, helpers and the rings (segments are kept)."""
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
        self.ctr.arr[self.ctr.g_connections] = 0
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
