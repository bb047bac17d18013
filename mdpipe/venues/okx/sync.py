"""OKX `books` sync rules for one instrument, free of I/O: the seqId/prevSeqId chain.

The machine classifies every book message and REST snapshot; it never touches a book (see
`local_book.OkxLocalBook`, which applies what it is told and verifies checksums). Rules
(OKX v5 order-book channel docs, and the changelog's REST start):

- A snapshot (in-band, any time) replaces the book: LOAD.
- An update applies when its prevSeqId equals the local seqId; the local seqId becomes its
  seqId, whether that is higher or lower (a lower one is a sequence reset after
  maintenance). seqId == prevSeqId with both sides empty is a keep-alive: no change.
- Anything else is a gap: the book is not exact until a new snapshot.
- A message without seqId (data recorded before the field existed) is accepted on its
  checksum alone: APPLY, and the caller must verify the non-zero checksum. Without seqId
  and without checksum nothing can prove it: a gap. After such a message the chain is
  unknown, so the next message is likewise accepted only on its checksum.
- REST start: updates are buffered; a snapshot whose seqId is below the first buffered
  prevSeqId is too old (fetch another); buffered updates with seqId <= the snapshot's are
  dropped; the first one applied needs prevSeqId <= snapSeq < seqId, then the chain rule.
  A REST snapshot is the book at its seqId, so the book is exact as soon as it is loaded.

Rollovers (two sockets carrying the same channels) use `on_overlap`: a message whose seqId
was recently applied is a duplicate, whichever socket it came on; one that continues the
chain applies; the new socket's messages that do not are dropped (the old socket delivers
what lies between), while the old socket's follow the usual rules.
"""

from __future__ import annotations

from collections import deque
from enum import Enum, IntEnum
from typing import NamedTuple

from mdpipe.venues.okx.events import SNAPSHOT, BookMessage

DEFAULT_MAX_BUFFER = 4096
RECENT_SEQ_IDS = 1024  # applied seqIds remembered to recognise duplicates in a rollover

START_SNAPSHOT = "snapshot"  # the in-band snapshot the server sends on subscribe
START_REST = "rest"  # GET /api/v5/market/books plus the buffered updates
STARTS = (START_SNAPSHOT, START_REST)


class Action(IntEnum):
    """What to do with one book message."""

    LOAD = 1  # a snapshot: replace the book with it (then verify its checksum)
    APPLY = 2  # an update that continues the book: apply it (then verify its checksum)
    KEEPALIVE = 3  # nothing changed; the book is still exact
    BUFFERED = 4  # kept until a REST snapshot arrives
    IGNORED = 5  # the book is waiting for a new snapshot: drop it
    DUPLICATE = 6  # already applied (seen on the other socket of a rollover): drop it
    RESYNC = 7  # gap: the book is not exact any more; get a new snapshot


class SnapshotStatus(Enum):
    """What an offered REST snapshot led to."""

    SYNCED = "synced"  # load it, apply `updates` in order: the book is exact
    TOO_OLD = "too_old"  # older than the buffered stream: fetch another
    GAP = "gap"  # the buffered updates do not continue it: fetch another
    UNNEEDED = "unneeded"  # the book is exact already: discard it


class SnapshotResult(NamedTuple):
    """The outcome of `on_rest_snapshot`: a status and the buffered updates to apply."""

    status: SnapshotStatus
    updates: list[BookMessage]


LOAD, APPLY, KEEPALIVE, BUFFERED = Action.LOAD, Action.APPLY, Action.KEEPALIVE, Action.BUFFERED
IGNORED, DUPLICATE, RESYNC = Action.IGNORED, Action.DUPLICATE, Action.RESYNC


class OkxBookSync:
    """The sync state of one instrument's `books` channel."""

    __slots__ = (
        "start",
        "max_buffer",
        "_synced",
        "_seq",
        "_after_rest",
        "_buffer",
        "_recent",
        "_recent_set",
        "reason",
        "gaps",
        "resyncs",
        "resets",
        "keepalives",
        "ignored",
        "duplicates",
        "checksum_failures",
        "unverifiable",
        "rejected_snapshots",
        "overflows",
    )

    def __init__(self, start: str = START_SNAPSHOT, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_buffer}")
        self.start = start
        self.max_buffer = max_buffer
        self._synced = False
        self._seq: int | None = None
        self._after_rest = False  # the next update is the first after a REST snapshot
        self._buffer: list[BookMessage] = []
        self._recent: deque[int] = deque()
        self._recent_set: set[int] = set()
        self.reason = ""
        self.gaps = 0  # chain breaks while the book was exact
        self.resyncs = 0  # times the book stopped being exact (gap, checksum, unverifiable)
        self.resets = 0  # sequence resets (seqId < prevSeqId) followed
        self.keepalives = 0
        self.ignored = 0
        self.duplicates = 0
        self.checksum_failures = 0
        self.unverifiable = 0
        self.rejected_snapshots = 0
        self.overflows = 0

    @property
    def synced(self) -> bool:
        """True only while the book provably equals the venue's."""
        return self._synced

    @property
    def seq_id(self) -> int | None:
        """The seqId the book is at; None when unknown (not synced, or after a seqId-less message)."""
        return self._seq

    @property
    def needs_rest(self) -> bool:
        """REST start: updates are buffered and a REST snapshot should be in flight."""
        return self.start == START_REST and not self._synced and bool(self._buffer)

    @property
    def buffered(self) -> int:
        """Updates held for the REST snapshot."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget the book (its connection went away): wait for a new snapshot."""
        self._synced = False
        self._seq = None
        self._after_rest = False
        self._buffer = []
        self._forget_recent()

    def _forget_recent(self) -> None:
        self._recent.clear()
        self._recent_set.clear()

    def _remember(self, seq: int | None) -> None:
        if seq is None:
            return
        recent = self._recent
        recent.append(seq)
        self._recent_set.add(seq)
        if len(recent) > RECENT_SEQ_IDS:
            old = recent.popleft()
            if old not in recent:  # a reset may repeat an id long after; keep what is live
                self._recent_set.discard(old)

    def _break(self, reason: str, m: BookMessage | None = None) -> Action:
        """The book stops being exact; in REST start `m` opens the new buffer."""
        if self._synced:
            self.resyncs += 1
        self.reason = reason
        self._synced = False
        self._seq = None
        self._after_rest = False
        self._buffer = [m] if m is not None and self.start == START_REST else []
        self._forget_recent()
        return RESYNC

    def checksum_failed(self, reason: str) -> Action:
        """The caller found the book's checksum differs from the message's: resync."""
        self.checksum_failures += 1
        if self._synced:
            self.gaps += 1
        return self._break(reason)

    # ----- book messages ------------------------------------------------------------------

    def on_message(self, m: BookMessage) -> Action:
        """Classify one `books` message; the caller loads or applies it as told."""
        if m.action == SNAPSHOT:
            return self._snapshot(m)
        if not self._synced:
            if self.start == START_REST:
                return self._buffer_update(m)
            self.ignored += 1
            return IGNORED
        return self._update(m)

    def _snapshot(self, m: BookMessage) -> Action:
        self._forget_recent()
        self._synced = True
        self._seq = m.seq_id
        self._after_rest = False
        buffered, self._buffer = self._buffer, []
        if buffered:
            self.ignored += len(buffered)  # the in-band snapshot supersedes them
        self._remember(m.seq_id)
        return LOAD

    def _update(self, m: BookMessage) -> Action:
        seq, prev, local = m.seq_id, m.prev_seq_id, self._seq
        if seq is None or local is None:
            # Only a checksum can prove this message (the caller verifies it after applying).
            if m.checksum == 0:
                self.unverifiable += 1
                self.gaps += 1
                why = (
                    "no seqId"
                    if seq is None
                    else "the chain is unknown (after a seqId-less message)"
                )
                return self._break(f"update with {why} and no checksum: cannot be verified", m)
            self._seq = seq
            self._after_rest = False
            self._remember(seq)
            return APPLY
        if self._after_rest:
            if seq <= local:
                self.ignored += 1
                return IGNORED
            if prev is not None and prev <= local:
                self._after_rest = False
                self._seq = seq
                self._remember(seq)
                return APPLY
            self.gaps += 1
            return self._break(f"gap: first update prevSeqId={prev} > REST snapshot {local}", m)
        if prev == local:
            if seq == prev and not m.bid_prices and not m.ask_prices:
                self.keepalives += 1
                return KEEPALIVE
            if seq < prev:
                self.resets += 1
            self._seq = seq
            self._remember(seq)
            return APPLY
        self.gaps += 1
        return self._break(f"gap: prevSeqId={prev} != local seqId {local} (seqId={seq})", m)

    def _buffer_update(self, m: BookMessage) -> Action:
        buffer = self._buffer
        if len(buffer) >= self.max_buffer:
            self.overflows += 1
            self._buffer = [m]
            self.reason = f"buffer overflow: {len(buffer)} updates without a REST snapshot"
            return RESYNC
        buffer.append(m)
        return BUFFERED

    # ----- rollovers ----------------------------------------------------------------------

    def on_overlap(self, m: BookMessage, new_socket: bool) -> Action:
        """Classify a message while two sockets carry this book (make-before-break)."""
        seq = m.seq_id
        if self._synced and seq is not None:
            if seq in self._recent_set and not (seq == m.prev_seq_id == self._seq):
                self.duplicates += 1
                return DUPLICATE
            if m.action != SNAPSHOT and m.prev_seq_id == self._seq:
                return self._update(m)
        if new_socket and self._synced:
            # Ahead of the book (or a snapshot of a state we hold): the old socket brings
            # what lies in between.
            self.duplicates += 1
            return DUPLICATE
        return self.on_message(m)

    # ----- REST start ---------------------------------------------------------------------

    def on_rest_snapshot(self, snap: BookMessage) -> SnapshotResult:
        """Reconcile a REST snapshot with the buffered updates (the documented rule)."""
        if self._synced:
            return SnapshotResult(SnapshotStatus.UNNEEDED, [])
        snap_seq = snap.seq_id
        if snap_seq is None:
            raise ValueError("a REST snapshot without seqId cannot start a book")
        buffer = self._buffer
        first = next((u for u in buffer if u.prev_seq_id is not None), None)
        if first is not None and snap_seq < first.prev_seq_id:
            return self._refuse(
                0,
                SnapshotStatus.TOO_OLD,
                f"REST seqId {snap_seq} < first buffered prevSeqId {first.prev_seq_id}",
            )
        start = 0
        while start < len(buffer) and (buffer[start].seq_id or 0) <= snap_seq:
            start += 1
        updates = buffer[start:]
        local = snap_seq
        for index, u in enumerate(updates):
            if u.seq_id is None or u.prev_seq_id is None:
                return self._refuse(
                    start + index + 1,
                    SnapshotStatus.GAP,
                    "a buffered update without seqId cannot follow a REST snapshot",
                )
            ok = u.prev_seq_id <= local < u.seq_id if index == 0 else u.prev_seq_id == local
            if not ok:
                return self._refuse(
                    start + index,
                    SnapshotStatus.GAP,
                    f"buffered prevSeqId={u.prev_seq_id} does not continue seqId {local}",
                )
            local = u.seq_id
        self._buffer = []
        self._synced = True
        self._seq = local
        self._after_rest = not updates
        self._forget_recent()
        self._remember(snap_seq)
        for u in updates:
            self._remember(u.seq_id)
        return SnapshotResult(SnapshotStatus.SYNCED, updates)

    def _refuse(self, keep_from: int, status: SnapshotStatus, reason: str) -> SnapshotResult:
        del self._buffer[:keep_from]
        self.rejected_snapshots += 1
        self.reason = reason
        return SnapshotResult(status, [])
