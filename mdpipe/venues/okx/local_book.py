"""One OKX instrument's exact book: the sync machine deciding, checksums verifying."""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from mdpipe.venues.okx.book import ChecksumBook
from mdpipe.venues.okx.events import BookMessage
from mdpipe.venues.okx.sync import (
    DEFAULT_MAX_BUFFER,
    START_SNAPSHOT,
    Action,
    OkxBookSync,
    SnapshotStatus,
)


class Verdict(IntEnum):
    """What one message did to the book."""

    LOADED = 1  # a snapshot replaced the book: it is exact (publish it)
    APPLIED = 2  # an update was applied: the book is exact (publish it)
    UNCHANGED = 3  # keep-alive: nothing changed, still exact
    BUFFERED = 4  # held for the REST snapshot
    DROPPED = 5  # ignored or a duplicate: nothing to do
    RESYNC = 6  # the book is not exact any more (gap or checksum): flag it, fetch anew


LOADED, APPLIED, UNCHANGED, BUFFERED, DROPPED, RESYNC = (
    Verdict.LOADED,
    Verdict.APPLIED,
    Verdict.UNCHANGED,
    Verdict.BUFFERED,
    Verdict.DROPPED,
    Verdict.RESYNC,
)

_VERDICT = {
    Action.KEEPALIVE: UNCHANGED,
    Action.BUFFERED: BUFFERED,
    Action.IGNORED: DROPPED,
    Action.DUPLICATE: DROPPED,
    Action.RESYNC: RESYNC,
}


class OkxLocalBook:
    """Feed it every `books` message and REST snapshot of one instId; read `book` when synced.

    `checksums_ok` / `checksums_checked` count verified non-zero checksums.
    """

    __slots__ = ("inst_id", "sync", "book", "checksums_checked")

    def __init__(
        self,
        inst_id: str = "",
        start: str = START_SNAPSHOT,
        depth: int = 20,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        self.inst_id = inst_id
        self.sync = OkxBookSync(start, max_buffer)
        self.book = ChecksumBook(min_depth=depth)
        self.checksums_checked = 0

    @property
    def synced(self) -> bool:
        """True only while the book provably equals the venue's."""
        return self.sync.synced

    def _verified(self, m: BookMessage, verdict: Verdict) -> Verdict:
        expected = m.checksum
        if expected:
            self.checksums_checked += 1
            got = self.book.checksum()
            if got != expected:
                self.sync.checksum_failed(
                    f"checksum mismatch at seqId={m.seq_id}: book {got} != message {expected}"
                )
                return RESYNC
        return verdict

    def on_message(self, m: BookMessage) -> Verdict:
        """Run the sync rules on a message, load or apply it, verify its checksum."""
        return self._act(self.sync.on_message(m), m)

    def on_overlap(self, m: BookMessage, new_socket: bool) -> Verdict:
        """The same, during a rollover (see OkxBookSync.on_overlap)."""
        return self._act(self.sync.on_overlap(m, new_socket), m)

    def _act(self, action: Action, m: BookMessage) -> Verdict:
        if action is Action.APPLY:
            self.book.update(m)
            return self._verified(m, APPLIED)
        if action is Action.LOAD:
            self.book.load(m)
            return self._verified(m, LOADED)
        return _VERDICT[action]

    def on_rest_snapshot(
        self, snap: BookMessage, on_applied: Callable[[BookMessage], None] | None = None
    ) -> SnapshotStatus:
        """Offer a REST snapshot; when accepted, load it and apply the buffered updates.

        `on_applied(m)` is called after the snapshot (with the snapshot) and after each
        buffered update, so each exact state can be published. A checksum mismatch on a
        buffered update ends it: the book is unsynced again (status GAP).
        """
        status, updates = self.sync.on_rest_snapshot(snap)
        if status is not SnapshotStatus.SYNCED:
            return status
        book = self.book
        book.load(snap)
        if on_applied is not None and not updates:
            on_applied(snap)
        for m in updates:
            book.update(m)
            if self._verified(m, APPLIED) is RESYNC:
                return SnapshotStatus.GAP
            if on_applied is not None:
                on_applied(m)
        return status

    def reset(self) -> None:
        """Start over (the connection was lost): empty book, wait for a snapshot."""
        self.sync.reset()
        self.book.clear()
