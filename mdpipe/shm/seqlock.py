"""The seqlock primitive: the C extension when it is built, else a pure-Python fallback.

Both implement the same four classes, so the writer and every reader use one code path:
  Writer(segment, staging, ...)  commit / commit_book / commit_trade / heartbeat / cursor
  Cursor(segment, out, ...)      poll() -> 1 copied, 0 none yet, 2 lapped; wait(spins); next
  Records(parts, bases, spins, on_idle)  iterator over the messages of (cursor, record) parts
  Latest(segment)                read(offset, out, ranges) -> seq; top(offset, asks_offset)

The C extension (mdpipe/shm/_seqlock.c) orders its loads and stores with C11 acquire/release
and is correct on any CPU. The pure-Python fallback relies on x86-64's total store order:
stores are not reordered with stores nor loads with loads, an aligned 8-byte store is one
`mov` and cannot tear, and every memoryview item access or slice copy is an opaque C call
the compiler cannot move across. Weakly ordered CPUs need fences Python cannot issue, so the
fallback refuses them. MDPIPE_SEQLOCK=python forces the fallback (the tests run both).
"""

from __future__ import annotations

import os
import platform
import time

from mdpipe.shm import layout as L

_CURSOR_Q = L.H_WRITE_CURSOR >> 3
_HEARTBEAT_Q = L.H_HEARTBEAT_NS >> 3
_LATEST_TRIES = 100_000


class PyWriter:
    """The pure-Python commit path (x86-64 only); see the module docstring."""

    def __init__(
        self,
        segment: memoryview,
        staging: memoryview,
        slots_offset: int,
        latest_offset: int,
        stride: int,
        capacity: int,
        record_size: int,
        max_symbols: int,
        symbol_seq_offset: int,
        commit_ts_offset: int,
        cursor: int,
    ) -> None:
        self._mv = memoryview(segment).cast("B")
        self._q = self._mv.cast("Q")
        self._stage = memoryview(staging).cast("B")
        self._stage_q = self._stage.cast("Q")
        self._stage_d = self._stage.cast("d")
        self._payload = self._stage[8:record_size]
        self._slots, self._latest, self._stride = slots_offset, latest_offset, stride
        self._mask, self._end = capacity - 1, record_size
        self._sseq_q, self._ts_q = symbol_seq_offset >> 3, commit_ts_offset >> 3
        self._symbol_seq = [0] * max_symbols
        self.cursor = cursor

    def commit(self, symbol_id: int) -> int:
        n = self.cursor
        q, mv, stage_q = self._q, self._mv, self._stage_q
        sseq = self._symbol_seq[symbol_id] + 1
        self._symbol_seq[symbol_id] = sseq
        stage_q[self._sseq_q] = sseq
        now = time.time_ns()
        stage_q[self._ts_q] = now
        payload, end = self._payload, self._end
        off = self._slots + (n & self._mask) * self._stride
        i = off >> 3
        q[i] = 2 * n + 1
        mv[off + 8 : off + end] = payload
        q[i] = 2 * n + 2
        off = self._latest + symbol_id * self._stride
        i = off >> 3
        q[i] = 2 * sseq - 1
        mv[off + 8 : off + end] = payload
        q[i] = 2 * sseq
        self.cursor = n + 1
        q[_CURSOR_Q] = n + 1
        q[_HEARTBEAT_Q] = now
        return n

    def commit_book(
        self,
        symbol_id: int,
        flags: int,
        exchange_ts_ns: int,
        recv_ts_ns: int,
        first_update_id: int,
        last_update_id: int,
        prev_update_id: int,
        bid_count: int,
        ask_count: int,
    ) -> int:
        sq = self._stage_q  # word offsets from layout.BOOK_OFFSETS (8, 16, 24, 40, 48, 56, 72)
        sq[1] = symbol_id | flags << 32
        sq[2] = exchange_ts_ns
        sq[3] = recv_ts_ns
        sq[5] = first_update_id
        sq[6] = last_update_id
        sq[7] = prev_update_id
        sq[9] = bid_count | ask_count << 16
        return self.commit(symbol_id)

    def commit_trade(
        self,
        symbol_id: int,
        flags: int,
        exchange_ts_ns: int,
        event_ts_ns: int,
        recv_ts_ns: int,
        trade_id: int,
        first_trade_id: int,
        last_trade_id: int,
        price: float,
        qty: float,
        side: int,
    ) -> int:
        sq = self._stage_q  # word offsets from layout.TRADE_OFFSETS
        sq[1] = symbol_id | flags << 32
        sq[2] = exchange_ts_ns
        sq[3] = event_ts_ns
        sq[4] = recv_ts_ns
        sq[6] = trade_id
        sq[7] = first_trade_id
        sq[8] = last_trade_id
        sd = self._stage_d
        sd[9] = price
        sd[10] = qty
        sq[12] = side & 0xFF
        return self.commit(symbol_id)

    def heartbeat(self) -> None:
        self._q[_HEARTBEAT_Q] = time.time_ns()

    def release(self) -> None:
        for v in (self._payload, self._stage_d, self._stage_q, self._stage, self._q, self._mv):
            v.release()


class PyCursor:
    """The pure-Python stream read (x86-64 only)."""

    def __init__(
        self,
        segment: memoryview,
        out: memoryview,
        slots_offset: int,
        stride: int,
        capacity: int,
        record_size: int,
        next: int,
    ) -> None:
        self._mv = memoryview(segment).cast("B")
        self._q = self._mv.cast("Q")
        self._out = memoryview(out).cast("B")
        self._slots, self._stride, self._mask, self._rsize = (
            slots_offset,
            stride,
            capacity - 1,
            record_size,
        )
        self.next = next
        self.released = False

    def poll(self) -> int:
        n = self.next
        off = self._slots + (n & self._mask) * self._stride
        q = self._q
        i = off >> 3
        want = 2 * n + 2
        s1 = q[i]
        if s1 < want:
            return 0
        if s1 > want:
            return 2
        self._out[:] = self._mv[off : off + self._rsize]
        if q[i] != want:
            return 2
        self.next = n + 1
        return 1

    def wait(self, spins: int) -> int:
        r = self.poll()
        while r == 0 and spins > 0:
            spins -= 1
            r = self.poll()
        return r

    def read_many(self, out: memoryview, max_n: int) -> tuple[int, bool]:
        keep = self._out
        dst = memoryview(out).cast("B")
        size = self._rsize
        count, r = 0, 1
        try:
            while count < max_n:
                self._out = dst[count * size : (count + 1) * size]
                r = self.poll()
                if r != 1:
                    break
                count += 1
        finally:
            self._out = keep
        return count, r == 2

    def release(self) -> None:
        self.released = True
        for v in (self._out, self._q, self._mv):
            v.release()


class PyRecords:
    """The messages of one or more cursors as an iterator (see the C Records): polls the
    (cursor, record) parts in turn up to `spins` rounds and returns the record view of the
    first that copied a message, bases[i] added to its symbol_id; else calls on_idle(0, -1)
    when all stayed empty or on_idle(2, i) when cursor i was lapped. on_idle returns None,
    new parts, or raises (StopIteration ends the iteration)."""

    def __init__(self, parts, bases, spins: int, on_idle) -> None:
        if spins < 0 or not callable(on_idle):
            raise ValueError("spins must be >= 0 and on_idle callable")
        self._bases = memoryview(bases).cast("B").cast("I")
        self._bind(parts)
        self._spins, self._on_idle = spins, on_idle

    def _bind(self, parts) -> None:
        parts = tuple(parts)
        if not 1 <= len(parts) <= len(self._bases):
            raise ValueError("Records needs 1 to len(bases) (cursor, record) parts")
        self._parts = parts
        self._rr = 0

    def __iter__(self) -> PyRecords:
        return self

    def __next__(self) -> object:
        while True:
            parts, n, lapped = self._parts, len(self._parts), -1
            for _ in range(self._spins + 1):
                for k in range(n):
                    i = (self._rr + k) % n
                    cursor, record = parts[i]
                    if cursor.released:
                        raise StopIteration
                    r = cursor.poll()
                    if r == 1:
                        base = self._bases[i]
                        if base:
                            record["symbol_id"] += base
                        self._rr = (i + 1) % n
                        return record
                    if r == 2:
                        lapped = i
                        break
                if lapped >= 0:
                    break
            swap = self._on_idle(2 if lapped >= 0 else 0, lapped)
            if swap is not None:
                self._bind(swap)


class PyLatest:
    """The pure-Python conflated reads (x86-64 only)."""

    def __init__(self, segment: memoryview) -> None:
        self._mv = memoryview(segment).cast("B")
        self._q = self._mv.cast("Q")
        self._d = self._mv.cast("d")

    def read(self, offset: int, out: memoryview, ranges: tuple[tuple[int, int], ...]) -> int:
        q, mv = self._q, self._mv
        i = offset >> 3
        dst = out if isinstance(out, memoryview) else memoryview(out).cast("B")
        for _ in range(_LATEST_TRIES):
            s1 = q[i]
            if s1 == 0:
                return 0
            if not s1 & 1:
                pos = 0
                for start, size in ranges:
                    dst[pos : pos + size] = mv[offset + start : offset + start + size]
                    pos += size
                if q[i] == s1:
                    return s1
        return -1

    def top(self, offset: int, asks_offset: int) -> tuple[float, float, float, float] | None | bool:
        q, d = self._q, self._d
        i = offset >> 3
        b = (offset + L.BOOK_LEVELS_OFFSET) >> 3
        a = (offset + asks_offset) >> 3
        for _ in range(_LATEST_TRIES):
            s1 = q[i]
            if not s1 & 1:
                flags = q[i + 1]  # symbol_id | flags << 32
                counts = q[i + (L.BOOK_OFFSETS["bid_count"] >> 3)]
                top = d[b], d[b + 1], d[a], d[a + 1]
                if q[i] == s1:
                    if not s1 or not flags >> 32 & L.FLAG_SYNCED:
                        return None
                    if not counts & 0xFFFF or not counts >> 16 & 0xFFFF:
                        return None
                    return top
        return False

    def release(self) -> None:
        for v in (self._d, self._q, self._mv):
            v.release()


def _check_python_memory_model() -> None:
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        raise RuntimeError(
            "mdpipe's pure-Python seqlock needs x86-64 store ordering and this CPU is "
            f"{machine!r}: install mdpipe with a C compiler present so its C extension is built"
        )


def _select() -> tuple[str, type, type, type, type]:
    if os.environ.get("MDPIPE_SEQLOCK", "").lower() != "python":
        try:
            from mdpipe.shm import _seqlock
        except ImportError:
            pass
        else:
            return "c", _seqlock.Writer, _seqlock.Cursor, _seqlock.Records, _seqlock.Latest
    return "python", PyWriter, PyCursor, PyRecords, PyLatest


IMPLEMENTATION, Writer, Cursor, Records, Latest = _select()


def check_memory_model() -> None:
    """Refuse to run where the selected implementation's ordering argument does not hold."""
    if IMPLEMENTATION == "python":
        _check_python_memory_model()
