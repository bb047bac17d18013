"""One symbol's exact book: a venue's sync rules, the L2 book and its ring records."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mdpipe.book import DEFAULT_WINDOW
from mdpipe.ingest.backoff import Backoff
from mdpipe.ingest.counters import Counters
from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter
from mdpipe.venues.base import Action, BookSync, DepthDiff, DepthSnapshot, SnapshotStatus
from mdpipe.venues.local_book import LocalBook

APPLY, BUFFERED, RESYNC = Action.APPLY, Action.BUFFERED, Action.RESYNC
_MS = 1_000_000

# Reports bad input: (kind, error, raw frame or None).
Reporter = Callable[[str, str, "bytes | None"], None]


class SymbolBook:
    """Feeds diffs and snapshots through the sync machine and writes one record per book state.

    Records are flagged SYNCED only while the sync machine proves the book exact; when a
    published book stops being exact, one record with flags 0 and no levels says so.
    """

    __slots__ = (
        "symbol",
        "sid",
        "depth",
        "local",
        "sync",
        "book",
        "epoch",
        "published",
        "counted",
        "fresh",
        "crossed",
        "recv_of",
        "inflight",
        "due",
        "backoff",
        "blocked",
        "last_id",
        "last_event_ns",
        "_w",
        "_ctr",
        "_arr",
        "_report",
        "_log",
    )

    def __init__(
        self,
        symbol: str,
        sid: int,
        sync: BookSync,
        writer: RingWriter,
        ctr: Counters,
        backoff: Backoff,
        report: Reporter,
        log: logging.Logger,
    ) -> None:
        self.symbol = symbol
        self.sid = sid
        self.depth = writer.depth
        self.local = LocalBook(
            sync, symbol, window=max(DEFAULT_WINDOW, 2 * self.depth), min_depth=self.depth
        )
        self.sync = self.local.sync
        self.book = self.local.book
        self.epoch = 0  # bumped on every reset: snapshot replies of older epochs are stale
        self.published = False  # the ring's latest record of this symbol is flagged SYNCED
        self.counted = False  # included in the g_books_synced gauge
        self.fresh = True  # the next record is the first of a (re)built book
        self.crossed = False
        self.recv_of: dict[int, int] = {}  # buffered diff u -> its frame's receive time
        self.inflight = False  # a snapshot request is out
        self.due = 0.0  # no snapshot request before this (monotonic): backoff, Retry-After
        self.backoff = backoff
        self.blocked = 0  # consecutive refusals (451/429/418) of the current streak
        self.last_id = 0
        self.last_event_ns = 0
        self._w = writer
        self._ctr = ctr
        self._arr = ctr.arr
        self._report = report
        self._log = log

    @property
    def live(self) -> bool:
        """Synced, or holding a snapshot while waiting for the diff that continues it."""
        return not self.sync.needs_snapshot

    @property
    def wants_snapshot(self) -> bool:
        """The sync rules ask for a recovery (snapshot, resubscribe) and none is under way."""
        return self.sync.needs_recovery and not self.inflight

    def on_diff(self, d: DepthDiff, recv_ns: int, raw: bytes) -> Action:
        """Classify, apply and publish one diff."""
        live = not self.sync.needs_snapshot
        action = self.local.on_diff(d)
        if action is APPLY:
            self._commit(d.event_time, d.first_id, d.last_id, d.prev_id, recv_ns, raw)
        elif action is BUFFERED:
            self.recv_of[d.last_id] = recv_ns
        elif action is RESYNC:
            self._broken(live, recv_ns)
            # The diff that broke the book opens the new buffer.
            self.recv_of = {d.last_id: recv_ns}
        return action

    def _commit(
        self, event_ms: int, first_id: int, last_id: int, prev: int, recv_ns: int, raw: bytes | None
    ) -> None:
        w = self._w
        book = self.book
        nb, na = book.write_top(w.bids, w.asks)
        depth = self.depth
        flags = L.FLAG_SYNCED
        if nb < depth or na < depth:
            flags |= L.FLAG_PARTIAL
        newly_synced = False
        if self.fresh:
            flags |= L.FLAG_RESYNC
            self.fresh = False
            newly_synced = not self.counted
        if book.is_crossed():
            flags |= L.FLAG_CROSSED
            if not self.crossed:
                self.crossed = True
                self._arr[self._ctr.crossed_books] += 1
                self._report(
                    "crossed_book",
                    f"{self.symbol} best bid {w.bids[0, 0]} >= best ask {w.asks[0, 0]} "
                    f"after update {last_id}",
                    raw,
                )
        elif self.crossed:
            self.crossed = False
        event_ns = event_ms * _MS
        w.commit_book(
            self.sid,
            flags,
            event_ns,
            recv_ns,
            first_id,
            last_id,
            prev if prev > 0 else 0,
            nb,
            na,
        )
        self.published = True
        self.last_id = last_id
        self.last_event_ns = event_ns
        self._arr[self._ctr.book_records] += 1
        if newly_synced:  # after the record: whoever sees the gauge finds the book in the ring
            self.counted = True
            self._arr[self._ctr.g_books_synced] += 1

    def _broken(self, live: bool, now_ns: int) -> None:
        """The sync machine dropped the book (gap, or too many diffs waiting for a snapshot)."""
        reason = self.sync.reason
        ctr = self._ctr
        if live:
            self._arr[ctr.gaps] += 1
            self._arr[ctr.resyncs] += 1
            self._log.warning("%s: %s; resyncing from a new snapshot", self.symbol, reason)
        else:
            ctr.inc("buffer_overflows")
            self._log.warning("%s: %s; still waiting for a snapshot", self.symbol, reason)
        self.invalidate(now_ns)

    def forget_older(self, cutoff_ns: int) -> None:
        """While waiting for a snapshot: drop buffered diffs received before `cutoff_ns`.

        A book whose snapshot waits for the REST weight budget (minutes, for the whole
        market) would otherwise hold every diff since it connected; the snapshot it gets
        will be newer than those, so they are never applied.
        """
        forget = getattr(self.sync, "forget_through", None)
        recv_of = self.recv_of
        if forget is None or not recv_of:
            return
        old = [u for u, t in recv_of.items() if t < cutoff_ns]
        if old and forget(max(old)):
            self.recv_of = {u: t for u, t in recv_of.items() if t >= cutoff_ns}

    def reset(self, now_ns: int) -> None:
        """Forget the book (its stream was interrupted): buffer afresh, fetch a new snapshot."""
        if not self.sync.needs_snapshot:
            self._arr[self._ctr.resyncs] += 1
        self.local.reset()
        self.recv_of = {}
        self.invalidate(now_ns)

    def invalidate(self, now_ns: int) -> None:
        """The book is no longer exact: say so in the ring and in g_books_synced."""
        if self.counted:
            self.counted = False
            self._arr[self._ctr.g_books_synced] -= 1
        self.epoch += 1
        self.fresh = True
        self.crossed = False
        self.unpublish(now_ns)

    def unpublish(self, now_ns: int) -> None:
        """Write the one record (flags 0, no levels) that tells readers the book is not exact."""
        if not self.published:
            return
        w = self._w
        w.bids[:] = 0.0
        w.asks[:] = 0.0
        w.commit_book(self.sid, 0, self.last_event_ns, now_ns, self.last_id, self.last_id, 0, 0, 0)
        self.published = False
        self._arr[self._ctr.book_records] += 1

    def on_snapshot(
        self, snap: DepthSnapshot, now_ns: int, raw: bytes | None = None
    ) -> SnapshotStatus:
        """Offer a snapshot; when it syncs, publish a record per buffered diff it is followed by,
        or (an in-band snapshot, exact at once) a record of the snapshot itself."""
        recv_of = self.recv_of
        live = not self.sync.needs_snapshot

        def publish(d: DepthDiff) -> None:
            # Each buffered diff is an exact book state: publish it with its own receive time.
            t = d.event_time
            self._commit(t, d.first_id, d.last_id, d.prev_id, recv_of.get(d.last_id, now_ns), None)

        status = self.local.on_snapshot(snap, publish)
        if status is SnapshotStatus.EXACT:
            self.recv_of = {}
            if live:
                # A snapshot in the middle of the stream replaces the book: a rebuild.
                self._arr[self._ctr.resyncs] += 1
                self._ctr.inc("snapshot_resets")
                self.fresh = True
                self.epoch += 1
            t, first, last = snap.event_time, snap.first_id, snap.last_update_id
            self._commit(t, first, last, 0, now_ns, raw)
        elif status is SnapshotStatus.SYNCED or status is SnapshotStatus.WAITING:
            self.recv_of = {}
        elif status is SnapshotStatus.INVALID:
            # The venue's own check refused the book built from it: whatever it published is
            # not exact.
            self._log.warning("%s: %s; rebuilding", self.symbol, self.sync.reason)
            self.recv_of = {}
            self.invalidate(now_ns)
        return status
