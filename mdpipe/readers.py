"""Reading mdpipe rings from any local process: `attach()` and the Reader it returns.

Readers map segments read-only and keep their cursor privately, so any number of them can
never slow or corrupt the writer. A reader that falls a whole ring behind is lapped: it
skips ahead and `Reader.lost` says exactly how many records it missed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator

import numpy as np
import posix_ipc

from mdpipe import layout as L
from mdpipe.segment import (
    HeaderView,
    LayoutError,
    SegmentNotReady,
    check_names,
    list_segments,
    map_segment,
    shm_name,
    shm_path,
)

__all__ = [
    "attach",
    "Reader",
    "NoSuchRingError",
    "LayoutError",
    "WriterGoneError",
    "list_instances",
]

# Empty polls between two checks of the writer's generation (one load per segment).
_CHECK_EVERY = 4096
# A writer whose heartbeat is older than this is looked up in /proc (at most this often).
_DEEP_CHECK_NS = 500_000_000


class NoSuchRingError(LookupError):
    """The instance or ring does not exist (the message lists what does)."""


class WriterGoneError(RuntimeError):
    """The writer died and did not come back within the reader's patience."""


def list_instances() -> dict[str, list[str]]:
    """Every instance with segments in /dev/shm, and its rings."""
    found: dict[str, list[str]] = {}
    for inst, ring in list_segments():
        found.setdefault(inst, []).append(ring)
    return found


def _describe_instances() -> str:
    found = list_instances()
    if not found:
        return "no mdpipe instance is running (start one with `mdpipe start`)"
    parts = [f"{inst} ({', '.join(rings)})" for inst, rings in sorted(found.items())]
    return "running instances: " + "; ".join(parts)


class _Segment:
    """One mapped ring segment with this reader's private cursor."""

    def __init__(self, instance: str, ring: str, kind: int | None) -> None:
        self.instance, self.ring, self.expected_kind = instance, ring, kind
        self.name = shm_name(instance, ring)
        self.restarts = 0
        self.symbol_base = 0  # added to symbol_id in records of a multi-ring reader
        self.alive = True  # the writer's liveness as of the last deep check
        self.checked_ns = 0  # monotonic time of that check
        self._map()
        self.next = self.cursor_now()  # start at the live edge

    def _map(self) -> None:
        try:
            mm, inode = map_segment(self.name, writable=False)
        except posix_ipc.PermissionsError:
            raise PermissionError(
                f"no read access to {shm_path(self.instance, self.ring)}: run as the user that "
                "started mdpipe, or set its `shm.group` so your user's group may read it"
            ) from None
        h = HeaderView(mm)
        try:
            h.validate(self.name, self.expected_kind)
        except LayoutError:
            h.release()
            mm.close()
            raise
        self.mm, self.inode, self.h = mm, inode, h
        self.kind = h.kind
        self.q = h.q
        self.mv = h.mv
        self.dtype = h.dtype()
        self.generation = h.generation
        self.capacity = h.capacity
        self.mask = self.capacity - 1
        self.depth = h.depth
        stride = h.u32_at(L.H_SLOT_SIZE)
        self.stride = stride
        self.rsize = h.u32_at(L.H_RECORD_SIZE)
        self.slots_off = h.u64(L.H_SLOTS_OFFSET)
        self.latest_off = h.u64(L.H_LATEST_OFFSET)
        self.cursor_q = L.H_WRITE_CURSOR >> 3
        self.symbols = h.symbols()
        self.symbol_ids = {s: i for i, s in enumerate(self.symbols)}
        if self.dtype is not None:
            self.buf = np.zeros(1, self.dtype)
            self.buf_mv = memoryview(self.buf).cast("B")
            self.buf_u32 = self.buf_mv.cast("I")
            self.record = self.buf[0]
            self.latest_buf = np.zeros(1, self.dtype)
            self.latest_mv = memoryview(self.latest_buf).cast("B")
            self.latest_u32 = self.latest_mv.cast("I")
            self.latest_record = self.latest_buf[0]
            # Strided read-only view of every slot, for batch reads.
            full = np.ndarray(
                (self.capacity,),
                dtype=np.dtype({"names": ["rec"], "formats": [self.dtype], "itemsize": stride}),
                buffer=self.mm,
                offset=self.slots_off,
            )
            self.slots = full["rec"]
            self.slot_seqs = self.slots["seq"]
            self.d = self.mv.cast("d")

    def unmap(self) -> None:
        for attr in ("slots", "slot_seqs", "d"):
            v = self.__dict__.pop(attr, None)
            if isinstance(v, memoryview):
                v.release()
        self.h.release()
        with contextlib.suppress(BufferError):
            self.mm.close()

    def cursor_now(self) -> int:
        return self.q[self.cursor_q]

    def refresh_symbols(self) -> None:
        self.symbols = self.h.symbols()
        self.symbol_ids = {s: i for i, s in enumerate(self.symbols)}

    def replaced(self) -> bool:
        """True when the name now points at a different segment (the writer recreated it)."""
        try:
            return os.stat(shm_path(self.instance, self.ring)).st_ino != self.inode
        except FileNotFoundError:
            return False

    def follow(self) -> int:
        """Re-map a segment the writer replaced and go on from the new segment's oldest record.

        Returns the records this reader can no longer read (lost): any left unread in the
        old segment, and any the new writer already overwrote.
        """
        unread = max(0, self.cursor_now() - self.next)
        self.unmap()
        self._map()
        self.next = max(0, self.cursor_now() - self.capacity + 1)
        self.restarts += 1
        return unread + self.next


class Reader:
    """Reads records of one ring (or of every shard `books.0`, `books.1`, ... of a ring name).

    `poll()` and iteration return a view of a reader-owned buffer that the next read
    overwrites: use it at once or `.copy()` it. `read_batch()` returns an array you own.
    """

    def __init__(self, instance: str, segments: list[_Segment], idle: str | float) -> None:
        self.instance = instance
        self._segs = segments
        self._one = segments[0] if len(segments) == 1 else None
        self._rr = 0
        self._empty = 0
        self._lost = 0
        self._idle = idle
        self._closed = False
        self._by_symbol: dict[str, _Segment] = {}
        self._index_symbols()

    def _index_symbols(self) -> None:
        base = 0
        for seg in self._segs:
            seg.symbol_base = base if len(self._segs) > 1 else 0
            base += len(seg.symbols)
        self._by_symbol = {s: seg for seg in self._segs for s in seg.symbols}
        self._latest_slots: dict[str, tuple[_Segment, int]] = {}
        self._top_words: dict[str, tuple[memoryview, memoryview, int, int, int]] = {}

    # ----- streaming ----------------------------------------------------------------------

    def poll(self) -> np.void | None:
        """The next record, or None when there is none yet; never blocks."""
        seg = self._one
        if seg is not None:
            n = seg.next
            off = seg.slots_off + (n & seg.mask) * seg.stride
            q = seg.q
            i = off >> 3
            s1 = q[i]
            if s1 == 2 * n + 2:
                seg.buf_mv[:] = seg.mv[off : off + seg.rsize]
                if q[i] == s1:
                    seg.next = n + 1
                    return seg.record
            elif s1 <= 2 * n + 1:  # not written yet, or being written right now
                self._empty += 1
                if self._empty >= _CHECK_EVERY:
                    self._idle_tick()
                return None
            return self._poll_slow(seg)
        for _ in range(len(self._segs)):
            seg = self._segs[self._rr]
            self._rr = (self._rr + 1) % len(self._segs)
            rec = self._poll_segment(seg)
            if rec is not None:
                return rec
        self._idle_tick()
        return None

    def _poll_slow(self, seg: _Segment) -> np.void | None:
        rec = self._poll_segment(seg)
        if rec is None:
            self._idle_tick()
        return rec

    def _poll_segment(self, seg: _Segment) -> np.void | None:
        """Seqlock read of the segment's next slot, handling lapping."""
        q = seg.q
        while True:
            n = seg.next
            off = seg.slots_off + (n & seg.mask) * seg.stride
            i = off >> 3
            s1 = q[i]
            want = 2 * n + 2
            if s1 == want:
                seg.buf_mv[:] = seg.mv[off : off + seg.rsize]
                if q[i] == s1:
                    seg.next = n + 1
                    if seg.symbol_base:
                        seg.buf_u32[2] += seg.symbol_base  # symbol_id, bytes 8..12
                    return seg.record
                continue  # overwritten while copying: we were lapped, re-check
            if s1 < want:
                return None  # not written yet, or being written right now
            self._skip_lapped(seg)

    def _skip_lapped(self, seg: _Segment) -> None:
        """Jump to the oldest record still safe to read and count what was skipped."""
        w = seg.cursor_now()
        # Slots hold messages w-capacity .. w-1; w-capacity may be being overwritten by w.
        target = max(seg.next + 1, w - seg.capacity + 1)
        self._lost += target - seg.next
        seg.next = target

    def _idle_tick(self) -> None:
        self._empty += 1
        if self._empty >= _CHECK_EVERY:
            self._empty = 0
            self._check_writers()

    def _check_writers(self) -> None:
        """Follow writer restarts: a new generation in place, or a replaced segment.

        Cheap enough for a spinning reader: one load per segment, and the costly look at
        /proc only when a writer's heartbeat is stale, at most twice a second.
        """
        changed = False
        now = time.monotonic_ns()
        for seg in self._segs:
            gen = seg.h.generation
            if gen != seg.generation:
                seg.generation = gen
                seg.restarts += 1
                seg.refresh_symbols()
                w = seg.cursor_now()
                if w < seg.next:  # defensive: a cursor never moves back in place
                    seg.next = w
                changed = True
            elif now - seg.checked_ns > _DEEP_CHECK_NS:
                seg.checked_ns = now
                if time.time_ns() - seg.h.heartbeat_ns <= _DEEP_CHECK_NS:
                    seg.alive = True
                    continue
                seg.alive = seg.h.writer_alive
                if not seg.alive and seg.replaced():
                    self._lost += seg.follow()
                    seg.alive = seg.h.writer_alive
                    changed = True
        if changed:
            self._index_symbols()

    def read_batch(self, max_n: int = 1024) -> np.ndarray:
        """Every record available now, up to max_n, as an array you own (oldest first)."""
        out = []
        budget = max_n
        for seg in self._segs:
            if budget <= 0:
                break
            part = self._read_segment_batch(seg, budget)
            if len(part):
                out.append(part)
                budget -= len(part)
        if not out:
            self._idle_tick()
            return np.empty(0, self._segs[0].dtype)
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _read_segment_batch(self, seg: _Segment, max_n: int) -> np.ndarray:
        for _ in range(4):
            n = seg.next
            w = seg.cursor_now()
            if w - n >= seg.capacity:
                self._skip_lapped(seg)
                continue
            k = min(w - n, max_n)
            if k <= 0:
                return np.empty(0, seg.dtype)
            idx = (np.arange(n, n + k, dtype=np.uint64) & np.uint64(seg.mask)).astype(np.intp)
            # Seqlock over a batch: seqs, then payloads, then seqs again (three C calls,
            # loads kept in order by x86-64); a slot counts only if both seqs are its own.
            before = seg.slot_seqs[idx]
            data = seg.slots[idx]
            after = seg.slot_seqs[idx]
            want = (np.arange(n, n + k, dtype=np.uint64) + np.uint64(1)) * np.uint64(2)
            ok = (before == want) & (after == want)
            if seg.symbol_base:
                data["symbol_id"] += seg.symbol_base
            if ok.all():
                seg.next = n + k
                return data
            good = int(np.argmin(ok))  # the first slot that failed
            if good:
                seg.next = n + good
                return data[:good]
            if before[0] > want[0] or after[0] > want[0]:
                self._skip_lapped(seg)
                continue
            return np.empty(0, seg.dtype)
        return np.empty(0, seg.dtype)

    def __iter__(self) -> Iterator[np.void]:
        """Yield records as they arrive; spins, or yields the CPU per `idle` (see attach)."""
        idle = self._idle
        if idle == "spin":
            wait = None
        elif idle == "yield":
            wait = os.sched_yield
        else:
            wait = functools.partial(time.sleep, float(idle))
        dead_since = None
        while not self._closed:
            seg = self._one
            if seg is not None:
                # poll() inlined for one segment: the hot loop of a spinning strategy.
                q, mv, buf_mv, rec = seg.q, seg.mv, seg.buf_mv, seg.record
                base, mask, stride, rsize = seg.slots_off, seg.mask, seg.stride, seg.rsize
                while True:
                    n = seg.next
                    off = base + (n & mask) * stride
                    i = off >> 3
                    want = 2 * n + 2
                    s1 = q[i]
                    if s1 == want:
                        buf_mv[:] = mv[off : off + rsize]
                        if q[i] == want:
                            seg.next = n + 1
                            yield rec
                            if self._closed:
                                return
                            continue
                    elif s1 < want:
                        if wait is not None:
                            wait()
                        self._empty += 1
                        if self._empty < _CHECK_EVERY:
                            continue
                    break  # lapped, overwritten, or due a health check: the general path
            got = self.poll()
            if got is not None:
                dead_since = None
                yield got
                continue
            if wait is not None:
                wait()
            if self._empty == 0:  # a health check just ran
                if all(seg.alive for seg in self._segs):
                    dead_since = None
                elif dead_since is None:
                    dead_since = time.monotonic()
                elif time.monotonic() - dead_since > self.dead_timeout:
                    raise WriterGoneError(
                        f"the writer of {self.describe()} has been gone for "
                        f"{self.dead_timeout:.0f} s"
                    )

    dead_timeout = 30.0

    # ----- conflated access ---------------------------------------------------------------

    def _segment_of(self, symbol: str) -> _Segment:
        seg = self._by_symbol.get(symbol)
        if seg is None:
            for s in self._segs:
                s.refresh_symbols()
            self._index_symbols()
            seg = self._by_symbol.get(symbol)
            if seg is None:
                raise KeyError(f"{symbol!r} is not in {self.describe()}; symbols: {self.symbols}")
        return seg

    def _latest_slot(self, symbol: str) -> tuple[_Segment, int]:
        """(segment, byte offset) of a symbol's latest-table slot, cached per symbol."""
        slot = self._latest_slots.get(symbol)
        if slot is None:
            seg = self._segment_of(symbol)
            slot = self._latest_slots[symbol] = (
                seg,
                seg.latest_off + seg.symbol_ids[symbol] * seg.stride,
            )
        return slot

    def latest(self, symbol: str) -> np.void | None:
        """The newest record of a symbol (a consistent copy in a reader-owned buffer), or None."""
        seg, off = self._latest_slot(symbol)
        q = seg.q
        i = off >> 3
        spins = 0
        while True:
            s1 = q[i]
            if s1 == 0:
                return None
            if not s1 & 1:
                seg.latest_mv[:] = seg.mv[off : off + seg.rsize]
                if q[i] == s1:
                    if seg.symbol_base:
                        seg.latest_u32[2] += seg.symbol_base
                    return seg.latest_record
            spins += 1
            if spins % 10_000 == 0 and not seg.h.writer_alive:
                return None  # a writer that died mid-write left this slot torn

    def top(self, symbol: str) -> tuple[float, float, float, float] | None:
        """(best bid, bid qty, best ask, ask qty) of a symbol's newest synced book, or None.

        None also when the book is not synced or a side is empty: never a guessed price.
        """
        words = self._top_words.get(symbol)
        if words is None:
            words = self._top_words_of(symbol)
        q, d, i, b, a = words
        spins = 0
        while True:
            s1 = q[i]
            if not s1 & 1:
                # Word 1 holds symbol_id and flags, word 9 bid_count and ask_count.
                flags = q[i + 1]
                counts = q[i + 9]
                top = d[b], d[b + 1], d[a], d[a + 1]
                if q[i] == s1:
                    break
            spins += 1
            if spins % 10_000 == 0 and not self._latest_slot(symbol)[0].h.writer_alive:
                return None
        if not s1 or not flags >> 32 & L.FLAG_SYNCED or not counts & 0xFFFF or not counts >> 16:
            return None
        return top

    def _top_words_of(self, symbol: str) -> tuple[memoryview, memoryview, int, int, int]:
        seg, off = self._latest_slot(symbol)
        if seg.kind != L.KIND_BOOK:
            raise TypeError(f"top() needs a book ring; {seg.ring!r} holds trades")
        i = off >> 3
        b = i + 10  # bids[0] at byte 80 of the book record
        words = (seg.q, seg.d, i, b, b + 2 * seg.depth)
        self._top_words[symbol] = words
        return words

    # ----- state --------------------------------------------------------------------------

    @property
    def lost(self) -> int:
        """Records this reader missed because the writer lapped it (exact)."""
        return self._lost

    @property
    def symbols(self) -> list[str]:
        """Every symbol of the ring(s): `symbols[rec["symbol_id"]]` names a record's symbol.

        Over several rings (shards) the records' symbol_id is rewritten, in the reader's own
        copies, to this reader-wide index.
        """
        return [s for seg in self._segs for s in seg.symbols]

    @property
    def dtype(self) -> np.dtype:
        """The record dtype."""
        return self._segs[0].dtype

    @property
    def writer_alive(self) -> bool:
        """True when every segment's writer process is running."""
        return all(seg.h.writer_alive for seg in self._segs)

    @property
    def generation(self) -> int:
        """The writer generation (the highest, over shards); bumps on every writer restart."""
        return max(seg.h.generation for seg in self._segs)

    @property
    def restarts(self) -> int:
        """Writer restarts this reader has followed."""
        self._check_writers()
        return sum(seg.restarts for seg in self._segs)

    @property
    def rings(self) -> list[str]:
        return [seg.ring for seg in self._segs]

    def describe(self) -> str:
        return f"instance {self.instance!r} ring(s) {', '.join(self.rings)}"

    def backlog(self) -> int:
        """Records written but not yet read by this reader."""
        return sum(max(0, seg.cursor_now() - seg.next) for seg in self._segs)

    def seek_recent(self, n: int) -> None:
        """Rewind so the next reads return (up to) the last n records of each ring."""
        for seg in self._segs:
            w = seg.cursor_now()
            seg.next = max(0, w - min(n, seg.capacity - 1))

    @property
    def position(self) -> int:
        """The number of the next message this reader reads: all before it are consumed.

        For a reader of one ring (a multi-shard reader has one position per shard).
        """
        (seg,) = self._segs
        return seg.next

    def seek(self, position: int) -> None:
        """Go on reading at message `position` of a one-ring reader (e.g. a saved `position`).

        Messages the writer already overwrote cannot be read: they count in `lost`.
        """
        (seg,) = self._segs
        w = seg.cursor_now()
        oldest = max(0, w - seg.capacity + 1)
        seg.next = min(max(position, oldest), w)
        self._lost += max(0, oldest - position)

    def seek_oldest(self) -> None:
        """Rewind to the oldest record still in the ring(s) (default: the live edge at attach)."""
        for seg in self._segs:
            seg.next = max(0, seg.cursor_now() - seg.capacity + 1)

    def close(self) -> None:
        """Unmap the segments; records returned earlier become invalid."""
        if self._closed:
            return
        self._closed = True
        for seg in self._segs:
            for attr in ("buf_u32", "latest_u32"):
                v = seg.__dict__.pop(attr, None)
                if v is not None:
                    v.release()
            for attr in ("record", "buf", "buf_mv", "latest_record", "latest_buf", "latest_mv"):
                seg.__dict__.pop(attr, None)
            seg.unmap()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Reader {self.describe()} lost={self._lost}>"


_KIND_ARG = {"book": L.KIND_BOOK, "trade": L.KIND_TRADE, None: None}


def _rings_matching(instance: str, ring: str) -> list[str]:
    present = [r for _, r in list_segments(instance)]
    if ring in present:
        return [ring]
    return sorted(r for r in present if r.startswith(ring + "."))


def attach(
    instance: str = "default",
    ring: str = "books",
    *,
    kind: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
    idle: str | float = "spin",
) -> Reader:
    """Attach read-only to a ring of a running mdpipe instance.

    ring: an exact segment name ("books.0") or a prefix covering its shards ("books").
    kind: "book" or "trade" to refuse a ring of the other kind.
    wait: wait for the ring to appear (up to timeout seconds, forever when None).
    idle: how iteration waits for data: "spin" (lowest latency, one core busy), "yield"
      (os.sched_yield between polls), or a float number of seconds to sleep.
    """
    L.check_memory_model()
    check_names(instance, ring)
    if kind not in _KIND_ARG:
        raise ValueError(f"kind must be 'book', 'trade' or None, got {kind!r}")
    if not (idle in ("spin", "yield") or isinstance(idle, float | int)):
        raise ValueError(f"idle must be 'spin', 'yield' or seconds, got {idle!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    # A segment whose header is still being written is microseconds from complete: even
    # without `wait`, look again for up to a second rather than report it as broken.
    not_ready_until = None
    while True:
        rings = _rings_matching(instance, ring)
        if rings:
            try:
                return Reader(
                    instance, [_Segment(instance, r, _KIND_ARG[kind]) for r in rings], idle
                )
            except SegmentNotReady:
                not_ready_until = not_ready_until or time.monotonic() + 1.0
            except posix_ipc.ExistentialError:
                pass  # removed between listing and mapping: look again
        now = time.monotonic()
        retrying = not_ready_until is not None and now < not_ready_until
        if not retrying and (not wait or (deadline is not None and now >= deadline)):
            waited = f" after waiting {timeout:g} s" if wait and timeout is not None else ""
            raise NoSuchRingError(
                f"no ring {ring!r} in instance {instance!r}{waited}; {_describe_instances()}"
            )
        time.sleep(0.001 if retrying else 0.05)
