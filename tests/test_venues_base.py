"""The venue-neutral pieces: LocalBook runs a machine's own check (a checksum) after applying."""

from __future__ import annotations

from mdpipe.book import OrderBook
from mdpipe.venues.base import Action, DepthDiff, DepthSnapshot, SnapshotStatus
from mdpipe.venues.bybit.sync import BybitBookSync
from mdpipe.venues.local_book import LocalBook


class CheckedSync(BybitBookSync):
    """Bybit's rules plus a check: the best bid must never be 13 (a stand-in for a checksum)."""

    __slots__ = ("checked",)

    def __init__(self) -> None:
        super().__init__()
        self.checked = 0

    def verify(self, event: DepthDiff | DepthSnapshot, book: OrderBook) -> Action:
        self.checked += 1
        best = book.best_bid()
        if best is not None and best[0] == 13.0:
            return self._broken("checksum mismatch")
        return Action.APPLY


def _snap(bid: float) -> DepthSnapshot:
    return DepthSnapshot(10, [bid], [1.0], [20.0], [1.0], 0, 0, "X", 1)


def test_a_failed_check_breaks_the_book_after_a_diff_or_a_snapshot() -> None:
    sync = CheckedSync()
    local = LocalBook(sync, "X")
    assert local.on_snapshot(_snap(12.0)) is SnapshotStatus.EXACT
    ok = DepthDiff("X", 0, 0, 2, 11, -1, [11.0], [1.0], [], [])
    assert local.on_diff(ok) is Action.APPLY
    bad = DepthDiff("X", 0, 0, 3, 12, -1, [13.0], [1.0], [], [])
    assert local.on_diff(bad) is Action.RESYNC
    assert not local.synced and sync.needs_recovery and sync.reason == "checksum mismatch"
    assert local.on_snapshot(_snap(13.0)) is SnapshotStatus.INVALID
    assert not local.synced
    assert local.on_snapshot(_snap(12.5)) is SnapshotStatus.EXACT and local.synced
    assert sync.checked == 5
