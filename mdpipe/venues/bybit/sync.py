"""Bybit's book rules, one machine per symbol, free of I/O.

The first push after subscribing is a snapshot; so is any later push Bybit sends after
trouble on its side, and a snapshot with `u` = 1 (the service restarted): each one
replaces the book, which is exact as of it. Deltas then apply when `u` is the last `u` + 1;
one with `u` <= last is stale and dropped; one with `u` > last + 1 is a gap. A gap, or a
delta with `u` = 1 (a restart announced without its snapshot), leaves no exact book: the
caller must unsubscribe and subscribe again, which brings a new snapshot (Bybit has no
resync request). Ids: `first_id` holds `u`, `last_id` the cross sequence `seq` (see wire.py).
"""

from __future__ import annotations

from mdpipe.venues.base import (
    Action,
    DepthDiff,
    DepthSnapshot,
    SnapshotResult,
    SnapshotStatus,
)

APPLY, IGNORED, RESYNC = Action.APPLY, Action.IGNORED, Action.RESYNC
_EXACT = SnapshotResult(SnapshotStatus.EXACT, [])


class BybitBookSync:
    """One symbol's Bybit book sync: snapshot, then deltas u, u+1, u+2, ..."""

    __slots__ = ("_book", "_stale", "_u", "_seq", "reason", "resyncs", "restarts", "ignored")

    def __init__(self) -> None:
        self._book = False  # a snapshot was loaded and every delta since applied
        self._stale = False  # the book broke while subscribed: resubscribe for a snapshot
        self._u = 0
        self._seq = -1
        self.reason = ""
        self.resyncs = 0
        self.restarts = 0  # snapshots with u = 1
        self.ignored = 0

    @property
    def synced(self) -> bool:
        """True only while the book provably equals Bybit's."""
        return self._book

    @property
    def needs_snapshot(self) -> bool:
        """No book: waiting for a snapshot."""
        return not self._book

    @property
    def needs_recovery(self) -> bool:
        """The book broke on a live subscription: only a resubscription brings a snapshot."""
        return self._stale

    @property
    def last_update_id(self) -> int:
        """The `seq` the book is at; -1 if none."""
        return self._seq if self._book else -1

    @property
    def buffered(self) -> int:
        """Bybit books never buffer: deltas before a snapshot are useless."""
        return 0

    def on_diff(self, diff: DepthDiff) -> Action:
        """Classify one delta; on APPLY its prev_id becomes the `seq` the book was at."""
        if not self._book:
            self.ignored += 1
            return IGNORED
        u = diff.first_id
        if u == self._u + 1:
            self._u = u
            diff.prev_id = self._seq
            self._seq = diff.last_id
            return APPLY
        if u == 1:
            return self._broken(f"service restart: delta u=1 after u={self._u}")
        if u <= self._u:
            self.ignored += 1
            return IGNORED
        return self._broken(f"gap: u={u} after u={self._u}")

    def _broken(self, reason: str) -> Action:
        self._book = False
        self._stale = True
        self.reason = reason
        self.resyncs += 1
        return RESYNC

    def on_snapshot(self, snapshot: DepthSnapshot) -> SnapshotResult:
        """Any snapshot replaces the book: it is exact as of the snapshot."""
        if snapshot.first_id == 1 and self._book:
            self.restarts += 1
            self.reason = "service restart: snapshot with u=1"
        self._book = True
        self._stale = False
        self._u = snapshot.first_id
        self._seq = snapshot.last_update_id
        return _EXACT

    def covers(self, diff: DepthDiff) -> bool:
        """Bybit feeds are not rolled over: never."""
        return False

    def as_next(self, diff: DepthDiff) -> DepthDiff:
        """Unused on Bybit (see covers)."""
        return diff

    def reset(self) -> None:
        """The connection was lost: the reconnect's subscription brings a snapshot."""
        self._book = False
        self._stale = False
        self._u = 0
        self._seq = -1
