"""The single writer of a shared-memory seqlock ring (one segment in /dev/shm per ring).

Commit protocol for message n in slot n & (capacity-1):
  seq = 2n+1 (odd: being written) -> payload bytes -> seq = 2n+2 (even, encodes n) -> cursor = n+1.
Readers copy a slot between two reads of its seq and accept it only when both equal 2n+2,
so they never accept a torn record and know exactly how many messages they lost when lapped.

Why plain Python stores are enough on x86-64: the CPU keeps stores in program order (TSO)
and each memoryview item store or slice copy is a separate opaque C call, so the compiler
cannot reorder the seq stores around the payload copy. An aligned 8-byte store is a single
`mov` and cannot tear. layout.check_memory_model() refuses other architectures.
"""

from __future__ import annotations

import contextlib
import grp
import mmap
import os
import struct
import time
from collections.abc import Sequence

import numpy as np
import posix_ipc

from mdpipe import layout as L
from mdpipe.segment import (
    HeaderView,
    LayoutError,
    check_names,
    map_segment,
    process_start_ticks,
    shm_name,
)


class WriterAliveError(RuntimeError):
    """Another live process already writes this ring."""


_CURSOR_Q = L.H_WRITE_CURSOR >> 3
_HEARTBEAT_Q = L.H_HEARTBEAT_NS >> 3


class RingWriter:
    """Creates a ring segment and commits records into it; one per segment, one process."""

    def __init__(self) -> None:  # use RingWriter.create
        raise TypeError("use RingWriter.create(...)")

    @classmethod
    def create(
        cls,
        instance: str,
        ring: str,
        kind: str,
        *,
        symbols: Sequence[str] = (),
        capacity: int = 1 << 16,
        depth: int = 20,
        max_symbols: int = 256,
        exchange: str = "",
        counters: Sequence[str] = (),
        mode: int = 0o600,
        group: str = "",
    ) -> RingWriter:
        """Create (or reclaim from a dead writer) the segment /dev/shm/mdpipe.<instance>.<ring>.

        mode/group: permissions of a new segment (e.g. 0o640 and the group of the readers).
        A segment whose writer is still alive is refused with WriterAliveError. One left by
        a dead writer with the same geometry is reused in place with the next generation and
        the cursor continued, so attached readers follow without re-attaching; otherwise it
        is replaced.
        """
        L.check_memory_model()
        check_names(instance, ring)
        kind_id = L.KIND_IDS.get(kind)
        if kind_id is None:
            raise ValueError(f"kind must be one of {sorted(L.KIND_IDS)}, got {kind!r}")
        if kind_id == L.KIND_STATUS:
            capacity, depth, max_symbols = 0, 0, max(len(symbols), 0)
        elif capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two >= 2, got {capacity}")
        if kind_id == L.KIND_TRADE:
            depth = 0
        if len(symbols) > max_symbols:
            raise ValueError(f"{len(symbols)} symbols exceed max_symbols={max_symbols}")
        geo = L.segment_geometry(kind_id, capacity, depth, max_symbols)
        gid = grp.getgrnam(group).gr_gid if group else -1
        self = object.__new__(cls)
        self._init(instance, ring, kind_id, capacity, depth, max_symbols, geo, exchange, mode, gid)
        for sym in symbols:
            self.add_symbol(sym)
        for name in counters:
            self.counter_index(name)
        return self

    def _init(
        self,
        instance: str,
        ring: str,
        kind_id: int,
        capacity: int,
        depth: int,
        max_symbols: int,
        geo: dict[str, int],
        exchange: str,
        mode: int,
        gid: int,
    ) -> None:
        self.instance, self.ring, self.kind = instance, ring, kind_id
        self.name = shm_name(instance, ring)
        self.capacity, self.depth, self.max_symbols = capacity, depth, max_symbols
        self.dtype = L.record_dtype(kind_id, depth)
        mm, cursor, generation = self._open_or_reclaim(geo, mode, gid)
        self._mm = mm
        self._mv = memoryview(mm)
        self._q = self._mv.cast("Q")
        pid = os.getpid()
        start_ticks = process_start_ticks(pid) or 0
        now = time.time_ns()
        q = self._q
        # Identity first, magic last: a reader never sees our magic over a half-written header.
        mm[L.H_EXCHANGE : L.H_EXCHANGE + L.NAME_BYTES] = exchange.encode()[: L.NAME_BYTES].ljust(
            L.NAME_BYTES, b"\0"
        )
        mm[L.H_RING_NAME : L.H_RING_NAME + L.NAME_BYTES] = ring.encode().ljust(L.NAME_BYTES, b"\0")
        descr = L.describe_dtype(self.dtype)
        mm[L.H_DTYPE_DESCR : L.H_DTYPE_DESCR + L.DTYPE_DESCR_BYTES] = descr.ljust(
            L.DTYPE_DESCR_BYTES, b"\0"
        )
        struct.pack_into(
            "<IIQIIIIII",
            mm,
            L.H_VERSION,
            L.LAYOUT_VERSION,
            kind_id,
            capacity,
            geo["record_size"],
            depth,
            max_symbols,
            0,  # symbols are (re)published by add_symbol
            0,  # counters likewise
            geo["slot_size"],
        )
        q[L.H_SYMBOLS_OFFSET >> 3] = geo["symbols_offset"]
        q[L.H_LATEST_OFFSET >> 3] = geo["latest_offset"]
        q[L.H_SLOTS_OFFSET >> 3] = geo["slots_offset"]
        q[L.H_SEGMENT_SIZE >> 3] = geo["segment_size"]
        q[L.H_WRITER_START_TICKS >> 3] = start_ticks
        q[L.H_WRITER_PID >> 3] = pid
        q[L.H_START_TIME_NS >> 3] = now
        q[L.H_WRITE_CURSOR >> 3] = cursor
        q[L.H_HEARTBEAT_NS >> 3] = now
        q[L.H_GENERATION >> 3] = generation
        q[L.H_MAGIC >> 3] = L.MAGIC

        self.generation = generation
        self._cursor = cursor
        self._mask = capacity - 1
        self._stride = geo["slot_size"]
        self._slots_off = geo["slots_offset"]
        self._latest_off = geo["latest_offset"]
        self._symbols_off = geo["symbols_offset"]
        self._rsize = geo["record_size"]
        self._symbols: dict[str, int] = {}
        self._symbol_seq: list[int] = []
        self._counter_names: dict[str, int] = {}
        self.counters = np.frombuffer(mm, np.uint64, L.MAX_COUNTERS, L.H_COUNTERS)
        if self.dtype is not None:
            self.staging = np.zeros(1, self.dtype)
            self._stage_mv = memoryview(self.staging).cast("B")
            self._stage_q = self._stage_mv.cast("Q")
            self._stage_d = self._stage_mv.cast("d")
            self._payload = self._stage_mv[8 : geo["record_size"]]
            self.record = self.staging[0]
            self._commit_ts_q = self.dtype.fields["commit_ts_ns"][1] >> 3
            self._symbol_seq_q = self.dtype.fields["symbol_seq"][1] >> 3
            if kind_id == L.KIND_BOOK:
                self.bids = self.staging["bids"][0]
                self.asks = self.staging["asks"][0]
        self._closed = False

    def _open_or_reclaim(
        self, geo: dict[str, int], mode: int, gid: int
    ) -> tuple[mmap.mmap, int, int]:
        """Map a fresh segment, or reclaim one whose writer died; returns (map, cursor, generation)."""
        size = geo["segment_size"]
        try:
            mm, _ = map_segment(self.name, writable=True)
        except posix_ipc.ExistentialError:
            return self._create_new(size, mode, gid), 0, 1
        h = HeaderView(mm)
        try:
            if h.magic == L.MAGIC and h.writer_alive:
                raise WriterAliveError(
                    f"ring {self.ring!r} of instance {self.instance!r} is written by live "
                    f"process {h.writer_pid}; stop it first (mdpipe stop --instance {self.instance})"
                )
            same = (
                h.magic == L.MAGIC
                and h.version == L.LAYOUT_VERSION
                and h.kind == self.kind
                and h.capacity == self.capacity
                and h.depth == self.depth
                and h.u32_at(L.H_MAX_SYMBOLS) == self.max_symbols
                and len(mm) == size
            )
            cursor, generation = h.write_cursor, h.generation
        finally:
            h.release()
        if same:
            # Reclaim in place: invalidate the latest table (the new writer's books start
            # unsynced) and keep the cursor so attached readers simply continue.
            start, end = geo["latest_offset"], geo["slots_offset"]
            mm[start:end] = bytes(end - start)
            return mm, cursor, generation + 1
        mm.close()
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(self.name)
        return self._create_new(size, mode, gid), 0, generation + 1

    def _create_new(self, size: int, mode: int, gid: int) -> mmap.mmap:
        try:
            shm = posix_ipc.SharedMemory(self.name, posix_ipc.O_CREX, mode=mode, size=size)
        except posix_ipc.ExistentialError:
            raise WriterAliveError(
                f"ring {self.ring!r} of instance {self.instance!r} was just created by another process"
            ) from None
        try:
            if gid >= 0:
                os.fchown(shm.fd, -1, gid)
            os.fchmod(shm.fd, mode)  # the umask must not widen or narrow what was asked for
            return mmap.mmap(shm.fd, size)
        finally:
            shm.close_fd()

    # ----- tables -------------------------------------------------------------------------

    def add_symbol(self, symbol: str) -> int:
        """Register a symbol; returns its id (its index in the symbol table)."""
        if symbol in self._symbols:
            return self._symbols[symbol]
        raw = symbol.encode("ascii")
        if not raw or len(raw) >= L.SYMBOL_ENTRY:
            raise ValueError(f"symbol {symbol!r} must be 1..{L.SYMBOL_ENTRY - 1} ascii chars")
        sid = len(self._symbols)
        if sid >= self.max_symbols:
            raise ValueError(f"ring {self.ring!r} is full: max_symbols={self.max_symbols}")
        off = self._symbols_off + sid * L.SYMBOL_ENTRY
        self._mm[off : off + L.SYMBOL_ENTRY] = raw.ljust(L.SYMBOL_ENTRY, b"\0")
        # The name is stored before the count that publishes it.
        struct.pack_into("<I", self._mm, L.H_N_SYMBOLS, sid + 1)
        self._symbols[symbol] = sid
        self._symbol_seq.append(0)
        return sid

    @property
    def symbols(self) -> dict[str, int]:
        """Symbol name to id."""
        return dict(self._symbols)

    def counter_index(self, name: str) -> int:
        """The index of a named counter in `self.counters`, registering it on first use."""
        idx = self._counter_names.get(name)
        if idx is not None:
            return idx
        idx = len(self._counter_names)
        if idx >= L.MAX_COUNTERS:
            raise ValueError(f"more than {L.MAX_COUNTERS} counters")
        raw = name.encode("ascii")
        if len(raw) >= L.NAME_BYTES:
            raise ValueError(f"counter name {name!r} is longer than {L.NAME_BYTES - 1} chars")
        off = L.H_COUNTER_NAMES + idx * L.NAME_BYTES
        self._mm[off : off + L.NAME_BYTES] = raw.ljust(L.NAME_BYTES, b"\0")
        self.counters[idx] = 0
        struct.pack_into("<I", self._mm, L.H_N_COUNTERS, idx + 1)
        self._counter_names[name] = idx
        return idx

    def add(self, name: str, n: int = 1) -> None:
        """Add n to a named counter (not for the hot path: cache counter_index there)."""
        self.counters[self.counter_index(name)] += n

    def set(self, name: str, value: int) -> None:
        """Set a named counter used as a gauge (e.g. a reader cursor)."""
        self.counters[self.counter_index(name)] = value

    # ----- commits ------------------------------------------------------------------------

    def commit(self, symbol_id: int) -> int:
        """Publish the staging record for symbol_id; returns its message number.

        Sets seq, commit_ts_ns and symbol_seq itself; every other field is the caller's.
        """
        n = self._cursor
        q = self._q
        mv = self._mv
        stage_q = self._stage_q
        seqs = self._symbol_seq
        sseq = seqs[symbol_id] + 1
        seqs[symbol_id] = sseq
        stage_q[self._symbol_seq_q] = sseq
        payload = self._payload
        end = self._rsize
        off = self._slots_off + (n & self._mask) * self._stride
        i = off >> 3
        q[i] = 2 * n + 1
        mv[off + 8 : off + end] = payload
        # Stamped into the slot last, so commit_ts_ns is the instant before it turns visible.
        now = time.time_ns()
        q[i + self._commit_ts_q] = now
        q[i] = 2 * n + 2
        stage_q[self._commit_ts_q] = now
        off = self._latest_off + symbol_id * self._stride
        i = off >> 3
        q[i] = 2 * sseq - 1
        mv[off + 8 : off + end] = payload
        q[i] = 2 * sseq
        self._cursor = n + 1
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
        """Publish a book record whose levels were written into self.bids / self.asks."""
        sq = self._stage_q  # word offsets of the book record's fields (layout.BOOK_FIELDS_PREFIX)
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
        """Publish one trade record (side: +1 the aggressor bought, -1 it sold)."""
        sq = self._stage_q  # word offsets of the trade record's fields (layout.TRADE_FIELDS)
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
        """Tell readers and stats the writer is alive while it has nothing to commit."""
        self._q[L.H_HEARTBEAT_NS >> 3] = time.time_ns()

    @property
    def cursor(self) -> int:
        """Messages committed so far (over every generation of this segment)."""
        return self._cursor

    def close(self, *, unlink: bool = False) -> None:
        """Stop writing: mark the segment writer-less, and remove it when unlink is True."""
        if self._closed:
            return
        self._closed = True
        self._q[L.H_WRITER_PID >> 3] = 0
        for attr in ("bids", "asks", "record", "staging", "counters"):
            self.__dict__.pop(attr, None)
        for view in ("_payload", "_stage_d", "_stage_q", "_stage_mv"):
            v = self.__dict__.pop(view, None)
            if v is not None:
                v.release()
        self._q.release()
        self._mv.release()
        # A caller may still hold a numpy view; then the mapping goes with the process.
        with contextlib.suppress(BufferError):
            self._mm.close()
        if unlink:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory(self.name)

    def __enter__(self) -> RingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unlink_instance(instance: str) -> list[str]:
    """Remove every segment of an instance whose writer is not alive; returns the rings removed."""
    from mdpipe.segment import list_segments

    removed = []
    for inst, ring in list_segments(instance):
        name = shm_name(inst, ring)
        try:
            mm, _ = map_segment(name, writable=False)
        except (posix_ipc.ExistentialError, LayoutError):
            continue
        h = HeaderView(mm)
        alive = h.magic == L.MAGIC and h.writer_alive
        h.release()
        mm.close()
        if not alive:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory(name)
            removed.append(ring)
    return removed
