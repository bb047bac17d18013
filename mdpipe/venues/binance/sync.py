"""Binance local-book synchronisation rules, one state machine per symbol, free of I/O.

The machine decides, for every diff and snapshot, what the caller must do with it; it never
touches a book. States: buffering (waiting for a snapshot), waiting for the first diff
after an accepted snapshot, synced. A book is reported synced only once a diff has proved
the stream continues the snapshot, and it stops being synced at the first gap.
"""

from __future__ import annotations

from dataclasses import replace

from mdpipe.venues.base import (
    Action,
    DepthDiff,
    DepthSnapshot,
    SnapshotResult,
    SnapshotStatus,
)

DEFAULT_MAX_BUFFER = 4096


APPLY, BUFFERED, IGNORED, RESYNC = Action.APPLY, Action.BUFFERED, Action.IGNORED, Action.RESYNC


class _BookSync:
    """State and counters shared by the spot and futures machines."""

    __slots__ = (
        "max_buffer",
        "_buffer",
        "_synced",
        "_waiting",
        "_last_id",
        "reason",
        "resyncs",
        "overflows",
        "ignored",
        "rejected_snapshots",
    )

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_buffer}")
        self.max_buffer = max_buffer
        self._buffer: list[DepthDiff] = []
        self._synced = False
        self._waiting = False
        self._last_id = -1
        self.reason = ""  # why the last RESYNC or refused snapshot happened
        self.resyncs = 0
        self.overflows = 0
        self.ignored = 0
        self.rejected_snapshots = 0

    @property
    def synced(self) -> bool:
        """True only while the book provably equals the exchange's (snapshot plus every diff)."""
        return self._synced

    @property
    def needs_snapshot(self) -> bool:
        """True while buffering: the caller should have a snapshot request in flight."""
        return not (self._synced or self._waiting)

    @property
    def last_update_id(self) -> int:
        """The update id the book is at (last applied `u`, or the snapshot's id); -1 if none."""
        return self._last_id

    @property
    def needs_recovery(self) -> bool:
        """Buffering with at least one diff: fetch a REST snapshot (never one older than it)."""
        return not (self._synced or self._waiting) and bool(self._buffer)

    @property
    def buffered(self) -> int:
        """Number of diffs held while waiting for a snapshot."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget everything (e.g. after a reconnect): buffer afresh and fetch a new snapshot."""
        self._buffer = []
        self._synced = False
        self._waiting = False
        self._last_id = -1

    def _resync(self, diff: DepthDiff, reason: str) -> Action:
        """Drop the book; `diff` starts the new buffer (it may be the next sync's first diff)."""
        self.reset()
        self._buffer.append(diff)
        self.resyncs += 1
        self.reason = reason
        return RESYNC

    def forget_through(self, last_id: int) -> int:
        """While buffering: drop the buffered diffs up to update id `last_id` (older than any
        snapshot still to come, so never needed); returns how many were dropped."""
        if self._synced or self._waiting:
            return 0
        buffer = self._buffer
        n = 0
        while n < len(buffer) and buffer[n].last_id <= last_id:
            n += 1
        del buffer[:n]
        return n

    def _buffer_diff(self, diff: DepthDiff) -> Action:
        buffer = self._buffer
        if len(buffer) >= self.max_buffer:
            self.overflows += 1
            return self._resync(diff, f"buffer overflow: {len(buffer)} diffs without a snapshot")
        buffer.append(diff)
        return BUFFERED

    def _restart_from(self, index: int, status: SnapshotStatus, reason: str) -> SnapshotResult:
        """Refuse a snapshot; keep the buffered diffs from `index` on for the next one."""
        del self._buffer[:index]
        self.rejected_snapshots += 1
        self.reason = reason
        return SnapshotResult(status, [])

    def _accept(self, snapshot_id: int, diffs: list[DepthDiff]) -> SnapshotResult:
        self._buffer = []
        if diffs:
            self._synced = True
            self._last_id = diffs[-1].last_id
            return SnapshotResult(SnapshotStatus.SYNCED, diffs)
        self._waiting = True
        self._last_id = snapshot_id
        return SnapshotResult(SnapshotStatus.WAITING, [])


class FuturesBookSync(_BookSync):
    """USD-M futures rules: first diff has U <= lastUpdateId <= u, then pu == previous u."""

    __slots__ = ()

    def on_diff(self, diff: DepthDiff) -> Action:
        """Classify one diff; the caller applies it to the book only on APPLY."""
        if self._synced:
            if diff.prev_id == self._last_id:
                self._last_id = diff.last_id
                return APPLY
            return self._resync(diff, f"gap: pu={diff.prev_id}, previous u={self._last_id}")
        if self._waiting:
            snapshot_id = self._last_id
            if diff.last_id < snapshot_id:
                self.ignored += 1
                return IGNORED
            if diff.first_id <= snapshot_id:
                self._waiting = False
                self._synced = True
                self._last_id = diff.last_id
                return APPLY
            return self._resync(diff, f"gap: first diff U={diff.first_id} > snapshot {snapshot_id}")
        return self._buffer_diff(diff)

    def covers(self, diff: DepthDiff) -> bool:
        """True when applying `diff` to the synced book gives exactly the book at its u.

        A diff holds the absolute quantity, as of u, of every level changed after pu; so any
        book at an id in [pu, u) ends exact, not only the one at pu. Two connections may cut
        the same stream into different diffs: this is what lets a rollover switch between them.
        """
        return self._synced and diff.prev_id <= self._last_id < diff.last_id

    def as_next(self, diff: DepthDiff) -> DepthDiff:
        """A diff the book `covers`, as the one that follows the book (pu = the book's u)."""
        return diff if diff.prev_id == self._last_id else replace(diff, prev_id=self._last_id)

    def on_snapshot(self, snapshot: DepthSnapshot) -> SnapshotResult:
        """Reconcile a snapshot with the buffer: drop u < lastUpdateId, check the first diff."""
        if not self.needs_snapshot:
            return SnapshotResult(SnapshotStatus.UNNEEDED, [])
        snapshot_id = snapshot.last_update_id
        buffer = self._buffer
        start = 0
        while start < len(buffer) and buffer[start].last_id < snapshot_id:
            start += 1
        if start == len(buffer):
            return self._accept(snapshot_id, [])
        first = buffer[start]
        if first.first_id > snapshot_id:
            if start == 0:
                return self._restart_from(
                    0, SnapshotStatus.TOO_OLD, f"snapshot {snapshot_id} < first U={first.first_id}"
                )
            return self._restart_from(
                start, SnapshotStatus.GAP, f"no buffered diff spans snapshot {snapshot_id}"
            )
        prev = first.last_id
        for index in range(start + 1, len(buffer)):
            diff = buffer[index]
            if diff.prev_id != prev:
                return self._restart_from(
                    index, SnapshotStatus.GAP, f"buffered gap: pu={diff.prev_id}, previous u={prev}"
                )
            prev = diff.last_id
        return self._accept(snapshot_id, buffer[start:])


class SpotBookSync(_BookSync):
    """Spot rules: snapshot >= first buffered U, first diff U <= id+1 <= u, then no U > id+1."""

    __slots__ = ()

    def on_diff(self, diff: DepthDiff) -> Action:
        """Classify one diff; the caller applies it to the book only on APPLY."""
        if self._synced:
            local_id = self._last_id
            if diff.last_id < local_id:
                self.ignored += 1
                return IGNORED
            if diff.first_id > local_id + 1:
                return self._resync(diff, f"gap: U={diff.first_id} > local id {local_id} + 1")
            self._last_id = diff.last_id
            return APPLY
        if self._waiting:
            snapshot_id = self._last_id
            if diff.last_id <= snapshot_id:
                self.ignored += 1
                return IGNORED
            if diff.first_id <= snapshot_id + 1:
                self._waiting = False
                self._synced = True
                self._last_id = diff.last_id
                return APPLY
            return self._resync(
                diff, f"gap: first diff U={diff.first_id} > snapshot {snapshot_id} + 1"
            )
        return self._buffer_diff(diff)

    def covers(self, diff: DepthDiff) -> bool:
        """True when applying `diff` to the synced book gives exactly the book at its u
        (U <= the book's id + 1 <= u, the rule every spot diff is applied by)."""
        return self._synced and diff.first_id <= self._last_id + 1 <= diff.last_id

    def as_next(self, diff: DepthDiff) -> DepthDiff:
        """A diff the book `covers`, as the one that follows the book (spot applies it as is)."""
        return diff

    def on_snapshot(self, snapshot: DepthSnapshot) -> SnapshotResult:
        """Reconcile a snapshot with the buffer: too old if < first U, drop u <= lastUpdateId."""
        if not self.needs_snapshot:
            return SnapshotResult(SnapshotStatus.UNNEEDED, [])
        snapshot_id = snapshot.last_update_id
        buffer = self._buffer
        if buffer and snapshot_id < buffer[0].first_id:
            return self._restart_from(
                0, SnapshotStatus.TOO_OLD, f"snapshot {snapshot_id} < first U={buffer[0].first_id}"
            )
        start = 0
        while start < len(buffer) and buffer[start].last_id <= snapshot_id:
            start += 1
        if start == len(buffer):
            return self._accept(snapshot_id, [])
        first = buffer[start]
        if first.first_id > snapshot_id + 1:
            return self._restart_from(
                start, SnapshotStatus.GAP, f"no buffered diff spans snapshot {snapshot_id} + 1"
            )
        to_apply = [first]
        local_id = first.last_id
        for index in range(start + 1, len(buffer)):
            diff = buffer[index]
            if diff.last_id < local_id:
                continue
            if diff.first_id > local_id + 1:
                return self._restart_from(
                    index, SnapshotStatus.GAP, f"buffered gap: U={diff.first_id} > {local_id} + 1"
                )
            to_apply.append(diff)
            local_id = diff.last_id
        return self._accept(snapshot_id, to_apply)


def book_sync(market: str, max_buffer: int = DEFAULT_MAX_BUFFER) -> FuturesBookSync | SpotBookSync:
    """The sync machine for a market ("futures" or "spot")."""
    if market == "futures":
        return FuturesBookSync(max_buffer)
    if market == "spot":
        return SpotBookSync(max_buffer)
    raise ValueError(f"market must be 'futures' or 'spot', got {market!r}")
