"""OKX `books` sync rules for one instrument, free of I/O: the seqId/prevSeqId chain + checksum.

The machine classifies every update and snapshot (the common `Action` / `SnapshotStatus`)
and `verify` checks the book after each change against the message's checksum. Rules (the
OKX v5 order-book channel docs, and the changelog's REST start):

- An in-band snapshot replaces the book (EXACT), whatever came before; one of a state the
  book has already been in (a rollover's new socket) is UNNEEDED.
- An update applies when its prevSeqId equals the book's seqId; the book's seqId becomes its
  seqId, higher or lower (lower: a sequence reset after maintenance, valid because prevSeqId
  matches). seqId == prevSeqId with no levels is a keep-alive: nothing changes (IGNORED).
  Anything else is a gap (RESYNC): the book is not exact until a new snapshot.
- Checksum (data recorded before the field went to 0 in June 2026): where a message carries
  a non-zero checksum, the book's top 25 levels per side must give it (signed CRC32 over the
  levels' raw text); a mismatch drops the book like a gap. 0 means absent.
- A message without seqId is accepted on its checksum alone; without either nothing can
  prove it (RESYNC). After such a message the chain is unknown, so the next one is likewise
  accepted only on its checksum.
- REST start: while the book is not exact, updates are buffered. A REST snapshot whose
  seqId is below the first buffered prevSeqId is TOO_OLD (fetch another); buffered updates
  with seqId <= the snapshot's are dropped; the first one applied needs prevSeqId <=
  snapSeq < seqId, then the chain rule (GAP otherwise). With nothing buffered after it the
  snapshot is loaded and the next update must span it (WAITING).

Record ids: last_update_id = seqId (0 for a message without one). OKX's seqId may go down
at a sequence reset; it is what `bbo-tbt`/`books5` carry, so tops are matched by it.
"""

from __future__ import annotations

from collections import deque

from mdpipe.book import OrderBook
from mdpipe.venues.base import Action, DepthDiff, DepthSnapshot, SnapshotResult, SnapshotStatus
from mdpipe.venues.okx.checksum import CHECKSUM_LEVELS
from mdpipe.venues.okx.parser import NO_PREV, NO_SEQ_ID, OkxCheck

DEFAULT_MAX_BUFFER = 4096
RECENT_SEQ_IDS = 1024  # applied seqIds remembered, to recognise a rollover's duplicates
# In-band start: updates buffered without a snapshot before the loop is asked to resubscribe.
SNAPSHOT_PATIENCE = 50

START_SNAPSHOT = "snapshot"  # the in-band snapshot the server sends on subscribe
START_REST = "rest"  # GET /api/v5/market/books plus the buffered updates
STARTS = (START_SNAPSHOT, START_REST)

APPLY, BUFFERED, IGNORED, RESYNC = Action.APPLY, Action.BUFFERED, Action.IGNORED, Action.RESYNC
_EMPTY, _WAITING, _SYNCED = 0, 1, 2


class OkxBookSync:
    """The sync state of one instrument's `books` channel (see the module docstring)."""

    __slots__ = (
        "start",
        "max_buffer",
        "_state",
        "_seq",
        "_buffer",
        "_broken",
        "_recent",
        "_recent_set",
        "_text_ok",
        "reason",
        "resyncs",
        "gaps",
        "resets",
        "keepalives",
        "ignored",
        "checksums_checked",
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
        self._state = _EMPTY
        self._seq: int | None = None  # the book's seqId; None when unknown
        self._buffer: list[DepthDiff] = []
        self._broken = False  # dropped since the last snapshot: the loop must act
        self._recent: deque[int] = deque()
        self._recent_set: set[int] = set()
        self._text_ok = False  # the book holds every level's text (checksums can be verified)
        self.reason = ""
        self.resyncs = 0  # times an exact book stopped being exact
        self.gaps = 0  # chain breaks of an exact book
        self.resets = 0  # sequence resets (seqId < prevSeqId) followed
        self.keepalives = 0
        self.ignored = 0
        self.checksums_checked = 0
        self.checksum_failures = 0
        self.unverifiable = 0
        self.rejected_snapshots = 0
        self.overflows = 0

    # ----- what the loop reads ------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True only while the book provably equals the venue's."""
        return self._state == _SYNCED

    @property
    def needs_snapshot(self) -> bool:
        """No usable book: buffering, or waiting for an in-band snapshot."""
        return self._state == _EMPTY

    @property
    def needs_recovery(self) -> bool:
        """The loop must act: fetch REST (REST start) or resubscribe (in-band start)."""
        if self._state != _EMPTY:
            return False
        if self.start == START_REST:
            return bool(self._buffer)
        return self._broken or len(self._buffer) >= SNAPSHOT_PATIENCE

    @property
    def last_update_id(self) -> int:
        """The seqId the book is at; -1 if none or unknown."""
        return -1 if self._seq is None or self._state == _EMPTY else self._seq

    @property
    def buffered(self) -> int:
        """Updates held while there is no book."""
        return len(self._buffer)

    def seen(self, seq_id: int) -> bool:
        """True when the book has been at `seq_id` (recently): a duplicate in a rollover."""
        return seq_id in self._recent_set

    def reset(self) -> None:
        """Forget the book (its connection went away): wait for a new snapshot."""
        self._drop(broken=False)
        self._buffer = []

    # ----- updates ------------------------------------------------------------------------

    def on_diff(self, d: DepthDiff) -> Action:
        """Classify one update; the caller applies it only on APPLY (then calls `verify`)."""
        state = self._state
        if state == _SYNCED:
            seq, prev, local = d.last_id, d.prev_id, self._seq
            if seq == NO_SEQ_ID or local is None:
                return self._on_checksum_alone(d)
            if prev == local:
                if seq == prev and not d.bid_prices and not d.ask_prices:
                    self.keepalives += 1
                    return IGNORED
                if seq < prev:
                    self.resets += 1
                self._advance(seq)
                return APPLY
            self.gaps += 1
            return self._break(
                f"gap: prevSeqId={prev} != the book's seqId {local} (seqId={seq})", d
            )
        if state == _WAITING:
            seq, local = d.last_id, self._seq
            if seq == NO_SEQ_ID or local is None:
                return self._break("an update without seqId cannot follow a REST snapshot", d)
            if seq <= local:
                self.ignored += 1
                return IGNORED
            if NO_PREV < d.prev_id <= local:
                self._state = _SYNCED
                self._advance(seq)
                return APPLY
            return self._break(
                f"gap: first update prevSeqId={d.prev_id} > REST snapshot seqId {local}", d
            )
        buffer = self._buffer
        if len(buffer) >= self.max_buffer:
            self.overflows += 1
            self._buffer = [d]
            self.reason = f"buffer overflow: {len(buffer)} updates without a snapshot"
            return RESYNC
        buffer.append(d)
        return BUFFERED

    def _on_checksum_alone(self, d: DepthDiff) -> Action:
        if d.check is None:
            self.unverifiable += 1
            self.gaps += 1
            why = "no seqId" if d.last_id == NO_SEQ_ID else "an unknown chain (after one without)"
            return self._break(f"update with {why} and no checksum: nothing proves it", d)
        self._advance(None if d.last_id == NO_SEQ_ID else d.last_id)
        return APPLY

    def _advance(self, seq: int | None) -> None:
        self._seq = seq
        if seq is not None:
            recent = self._recent
            recent.append(seq)
            self._recent_set.add(seq)
            if len(recent) > RECENT_SEQ_IDS:
                old = recent.popleft()
                if old not in recent:
                    self._recent_set.discard(old)

    def _drop(self, broken: bool) -> None:
        if self._state == _SYNCED:
            self.resyncs += 1
        self._state = _EMPTY
        self._seq = None
        self._broken = broken
        self._recent.clear()
        self._recent_set.clear()
        self._text_ok = False

    def _break(self, reason: str, d: DepthDiff | None) -> Action:
        """The book stops being exact; `d` opens the new buffer."""
        self._drop(broken=True)
        self.reason = reason
        self._buffer = [d] if d is not None else []
        return RESYNC

    # ----- snapshots ----------------------------------------------------------------------

    def on_snapshot(self, snap: DepthSnapshot) -> SnapshotResult:
        """An in-band snapshot (symbol set) replaces the book; a REST one is reconciled."""
        if snap.symbol:
            seq = snap.last_update_id
            if self._state == _SYNCED and seq != NO_SEQ_ID and seq in self._recent_set:
                return SnapshotResult(SnapshotStatus.UNNEEDED, [])
            if self._state == _SYNCED:
                self.resyncs += 1  # a replaced exact book: counted as a rebuild
            self._state = _SYNCED
            self._broken = False
            self._buffer = []
            self._seq = None if seq == NO_SEQ_ID else seq
            self._advance(self._seq)
            return SnapshotResult(SnapshotStatus.EXACT, [])
        return self._rest(snap)

    def _rest(self, snap: DepthSnapshot) -> SnapshotResult:
        if self._state != _EMPTY:
            return SnapshotResult(SnapshotStatus.UNNEEDED, [])
        snap_seq = snap.last_update_id
        buffer = self._buffer
        first_prev = next((u.prev_id for u in buffer if u.prev_id != NO_PREV), None)
        if first_prev is not None and snap_seq < first_prev:
            return self._refuse(
                0,
                SnapshotStatus.TOO_OLD,
                f"REST seqId {snap_seq} < first buffered prevSeqId {first_prev}",
            )
        start = 0
        while start < len(buffer) and buffer[start].last_id <= snap_seq:
            start += 1
        updates = buffer[start:]
        local = snap_seq
        for i, u in enumerate(updates):
            if u.last_id == NO_SEQ_ID or u.prev_id == NO_PREV:
                return self._refuse(
                    start + i + 1,
                    SnapshotStatus.GAP,
                    "a buffered update without seqId cannot follow a REST snapshot",
                )
            ok = u.prev_id <= local < u.last_id if i == 0 else u.prev_id == local
            if not ok:
                return self._refuse(
                    start + i,
                    SnapshotStatus.GAP,
                    f"buffered prevSeqId={u.prev_id} does not continue seqId {local}",
                )
            local = u.last_id
        self._buffer = []
        self._broken = False
        self._seq = snap_seq
        self._advance(snap_seq)
        for u in updates:
            self._advance(u.last_id)
        if updates:
            self._state = _SYNCED
            return SnapshotResult(SnapshotStatus.SYNCED, updates)
        self._state = _WAITING
        return SnapshotResult(SnapshotStatus.WAITING, [])

    def _refuse(self, keep_from: int, status: SnapshotStatus, reason: str) -> SnapshotResult:
        del self._buffer[:keep_from]
        self.rejected_snapshots += 1
        self.reason = reason
        return SnapshotResult(status, [])

    # ----- the checksum -------------------------------------------------------------------

    def verify(self, ev: DepthDiff | DepthSnapshot, book: OrderBook) -> Action:
        """After `ev` was applied to `book`: APPLY when the book gives `ev`'s checksum (or it
        carries none), RESYNC on a mismatch: the book is dropped here, like a gap."""
        check: OkxCheck | None = ev.check
        if ev.__class__ is DepthSnapshot:
            if check is None:
                self._text_ok = False
                return APPLY
            book.set_texts(ev.bid_prices, check.bid_text, ev.ask_prices, check.ask_text)
            self._text_ok = True
        elif check is None:
            self._text_ok = False  # levels without their text: later checksums unverifiable
            return APPLY
        elif self._text_ok:
            book.set_texts(ev.bid_prices, check.bid_text, ev.ask_prices, check.ask_text)
        elif ev.first_id == NO_SEQ_ID or self._seq is None:
            # Accepted on its checksum alone, and the checksum cannot be computed.
            self.unverifiable += 1
            return self._failed(
                f"seqId={ev.first_id}: checksum cannot be verified (levels unknown)"
            )
        else:
            return APPLY  # the chain proved it
        self.checksums_checked += 1
        got = book.text_checksum(CHECKSUM_LEVELS)
        if got == check.checksum:
            return APPLY
        return self._failed(
            f"checksum mismatch at seqId={ev.first_id}: book {got} != {check.checksum}"
        )

    def _failed(self, reason: str) -> Action:
        self.checksum_failures += 1
        if self._state == _SYNCED:
            self.gaps += 1
        self._drop(broken=True)
        self._buffer = []
        self.reason = reason
        return RESYNC
