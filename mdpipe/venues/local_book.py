"""One symbol's exact local book: a venue's sync machine deciding what reaches an OrderBook."""

from __future__ import annotations

from collections.abc import Callable

from mdpipe.book import DEFAULT_MIN_DEPTH, DEFAULT_WINDOW, OrderBook
from mdpipe.venues.base import (
    LOADS_SNAPSHOT,
    Action,
    BookSync,
    DepthDiff,
    DepthSnapshot,
    SnapshotStatus,
)

APPLY = Action.APPLY


class LocalBook:
    """Feed it every diff and every snapshot of one symbol; read `book` when `synced`."""

    __slots__ = ("symbol", "sync", "book", "_verify")

    def __init__(
        self,
        sync: BookSync,
        symbol: str = "",
        window: int = DEFAULT_WINDOW,
        min_depth: int = DEFAULT_MIN_DEPTH,
    ) -> None:
        self.symbol = symbol
        self.sync = sync
        self.book = OrderBook(window, min_depth)
        self._verify = getattr(sync, "verify", None)  # the venue's own check, if it has one

    @property
    def synced(self) -> bool:
        """True only while the book provably equals the exchange's."""
        return self.sync.synced

    def on_diff(self, diff: DepthDiff) -> Action:
        """Run the sync rules on a diff and apply it when they say so; returns their verdict.

        On RESYNC the book keeps its last levels but is no longer synced: publish it flagged,
        or not at all, and recover it.
        """
        action = self.sync.on_diff(diff)
        if action is APPLY:
            self.book.apply(diff.bid_prices, diff.bid_qtys, diff.ask_prices, diff.ask_qtys)
            if self._verify is not None:
                return self._verify(diff, self.book)
        return action

    def on_snapshot(
        self,
        snapshot: DepthSnapshot,
        on_applied: Callable[[DepthDiff], None] | None = None,
    ) -> SnapshotStatus:
        """Offer a snapshot; when accepted, load it and apply the buffered diffs.

        `on_applied` is called after each buffered diff is applied, e.g. to publish a record
        per update id. TOO_OLD and GAP mean: fetch another snapshot.
        """
        status, diffs = self.sync.on_snapshot(snapshot)
        if status in LOADS_SNAPSHOT:
            book = self.book
            verify = self._verify
            book.apply_snapshot(
                snapshot.bid_prices, snapshot.bid_qtys, snapshot.ask_prices, snapshot.ask_qtys
            )
            if verify is not None and verify(snapshot, book) is not APPLY:
                return SnapshotStatus.INVALID
            for diff in diffs:
                book.apply(diff.bid_prices, diff.bid_qtys, diff.ask_prices, diff.ask_qtys)
                if verify is not None and verify(diff, book) is not APPLY:
                    return SnapshotStatus.INVALID
                if on_applied is not None:
                    on_applied(diff)
        return status

    def reset(self) -> None:
        """Start over (e.g. after a reconnect): empty book, buffer diffs, need a snapshot."""
        self.sync.reset()
        self.book.clear()
