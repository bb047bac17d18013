"""The single writer of a segment: creates it safely, reclaims it from a dead writer, commits.

Commit protocol for message n in slot n & (capacity-1) (mdpipe/shm/seqlock.py does it):
  seq = 2n+1 (odd: being written) -> payload -> seq = 2n+2 (even, encodes n) -> cursor = n+1.
Readers accept a slot only when both of their seq loads equal 2n+2, so they never accept a
torn record and know exactly how many messages they lost when lapped.

A new segment is built under a private temporary name and appears under its real name only
complete (link(2), which fails if the name exists), so no reader ever sees half a header. A
segment of ours left by a dead writer is reused in place when its geometry and mode match,
else replaced atomically (rename(2)); one we do not own is never touched: /dev/shm is sticky,
so another user's file there can only be refused, by name and owner.
"""

from __future__ import annotations

import contextlib
import grp
import mmap
import os
import struct
import time
from collections.abc import Mapping, Sequence

import numpy as np

from mdpipe.instrument import Instrument
from mdpipe.shm import layout as L
from mdpipe.shm import seqlock
from mdpipe.shm.segment import (
    SHM_DIR,
    HeaderView,
    LayoutError,
    SegmentMissing,
    check_names,
    open_segment,
    process_start_ticks,
    shm_name,
    shm_path,
)


class WriterAliveError(RuntimeError):
    """Another live process already writes this ring."""


class SegmentSquattedError(LayoutError):
    """The segment's name is taken by a file we do not own and cannot remove."""


def _encode(text: str, size: int, what: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) >= size:
        raise ValueError(f"{what} {text!r} is longer than {size - 1} ascii characters")
    return raw.ljust(size, b"\0")


class SegmentFile:
    """A segment of ours, mapped writable, with its header fields written; shared by ring and
    status writers."""

    def __init__(
        self,
        instance: str,
        ring: str,
        kind_id: int,
        capacity: int,
        depth: int,
        max_symbols: int,
        exchange: str,
        mode: int,
        group: str,
    ) -> None:
        check_names(instance, ring)
        if mode & 0o022 or mode & ~0o777:
            raise ValueError(f"segment mode {mode:04o} must not be writable by group or others")
        self.instance, self.ring, self.kind = instance, ring, kind_id
        self.name = shm_name(instance, ring)
        self.path = shm_path(instance, ring)
        self.capacity, self.depth, self.max_symbols = capacity, depth, max_symbols
        self.geo = L.segment_geometry(kind_id, capacity, depth, max_symbols)
        gid = grp.getgrnam(group).gr_gid if group else -1
        exchange_raw = _encode(exchange, L.NAME_BYTES, "exchange")
        self.mm, self.cursor, self.generation, tmp = self._open_or_reclaim(mode, gid)
        self._write_header(exchange_raw)
        if tmp is not None:
            self._publish(tmp)

    def _open_or_reclaim(self, mode: int, gid: int) -> tuple[mmap.mmap, int, int, str | None]:
        """(mapping, cursor, generation, temporary path to publish or None when reused)."""
        try:
            mm, st = open_segment(self.instance, self.ring, writable=True)
        except SegmentMissing:
            return self._create_tmp(mode, gid), 0, 1, self._tmp
        except LayoutError as exc:
            try:
                st = os.lstat(self.path)
            except FileNotFoundError:
                return self._create_tmp(mode, gid), 0, 1, self._tmp
            if st.st_uid != os.geteuid():
                raise SegmentSquattedError(
                    f"{self.path} is owned by uid {st.st_uid}, not by us: refusing to use it. "
                    "Another user created it (a planted or stale segment); have it removed, or "
                    "run this instance under another name"
                ) from exc
            return self._create_tmp(mode, gid), 0, 1, self._tmp  # ours but unusable: replace
        h = HeaderView(mm)
        try:
            if h.magic == L.MAGIC and h.writer_alive:
                raise WriterAliveError(
                    f"ring {self.ring!r} of instance {self.instance!r} is written by live "
                    f"process {h.writer_pid}; stop it first (mdpipe stop --instance {self.instance})"
                )
            try:
                h.validate(self.path, self.kind)
                valid = True
            except LayoutError:
                valid = False
            same = (
                valid
                and h.capacity == self.capacity
                and h.depth == self.depth
                and h.max_symbols == self.max_symbols
                and st.st_mode & 0o777 == mode
                and (gid < 0 or st.st_gid == gid)
            )
            cursor, generation = (h.write_cursor, h.generation) if valid else (0, 0)
        finally:
            h.release()
        if same:
            # Reclaim in place: invalidate the latest table (the new writer's books start
            # unsynced) and keep the cursor so attached readers simply continue.
            start, end = self.geo["latest_offset"], self.geo["slots_offset"]
            mm[start:end] = bytes(end - start)
            return mm, cursor, generation + 1, None
        mm.close()
        return self._create_tmp(mode, gid), 0, generation + 1, self._tmp

    def _create_tmp(self, mode: int, gid: int) -> mmap.mmap:
        """A new, fully allocated segment under a private name (published by _publish)."""
        size = self.geo["segment_size"]
        self._tmp = f"{SHM_DIR}/.{self.name[1:]}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        fd = os.open(
            self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode
        )
        try:
            if gid >= 0:
                os.fchown(fd, -1, gid)
            os.fchmod(fd, mode)  # the umask must not widen or narrow what was asked for
            try:
                # Reserve every page now: a full /dev/shm is a clear error here, not a SIGBUS
                # in the middle of a commit.
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                free = os.statvfs(SHM_DIR)
                raise OSError(
                    exc.errno,
                    f"cannot allocate {size} bytes for {self.path}: {exc.strerror} "
                    f"({free.f_bavail * free.f_frsize} bytes free in {SHM_DIR})",
                ) from None
            return mmap.mmap(fd, size)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            raise
        finally:
            os.close(fd)

    def _publish(self, tmp: str) -> None:
        """Give the finished segment its real name: link when absent, rename over ours."""
        try:
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                st = os.lstat(self.path)
                if st.st_uid != os.geteuid():
                    raise SegmentSquattedError(
                        f"{self.path} was just created by uid {st.st_uid}: refusing it"
                    ) from None
                os.rename(tmp, self.path)  # atomic replacement of our own stale segment
                return
            except PermissionError as exc:
                raise SegmentSquattedError(f"{self.path} cannot be created: {exc}") from None
            os.unlink(tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            self.mm.close()
            raise

    def _write_header(self, exchange_raw: bytes) -> None:
        mm, geo = self.mm, self.geo
        q = memoryview(mm).cast("Q")
        try:
            # Identity first, magic last: a reader never sees our magic over a half-written header.
            mm[L.H_EXCHANGE : L.H_EXCHANGE + L.NAME_BYTES] = exchange_raw
            mm[L.H_RING_NAME : L.H_RING_NAME + L.NAME_BYTES] = _encode(
                self.ring, L.NAME_BYTES, "ring"
            )
            descr = L.describe_dtype(L.record_dtype(self.kind, self.depth))
            mm[L.H_DTYPE_DESCR : L.H_DTYPE_DESCR + L.DTYPE_DESCR_BYTES] = descr.ljust(
                L.DTYPE_DESCR_BYTES, b"\0"
            )
            struct.pack_into(
                "<IIQIIIIII",
                mm,
                L.H_VERSION,
                L.LAYOUT_VERSION,
                self.kind,
                self.capacity,
                geo["record_size"],
                self.depth,
                self.max_symbols,
                0,  # symbols are (re)published by add_symbol
                0,  # counters likewise
                geo["slot_size"],
            )
            q[L.H_SYMBOLS_OFFSET >> 3] = geo["symbols_offset"]
            q[L.H_LATEST_OFFSET >> 3] = geo["latest_offset"]
            q[L.H_SLOTS_OFFSET >> 3] = geo["slots_offset"]
            q[L.H_SEGMENT_SIZE >> 3] = geo["segment_size"]
            pid = os.getpid()
            now = time.time_ns()
            q[L.H_WRITER_START_TICKS >> 3] = process_start_ticks(pid) or 0
            q[L.H_WRITER_PID >> 3] = pid
            q[L.H_START_TIME_NS >> 3] = now
            q[L.H_WRITE_CURSOR >> 3] = self.cursor
            q[L.H_HEARTBEAT_NS >> 3] = now
            q[L.H_GENERATION >> 3] = self.generation
            q[L.H_MAGIC >> 3] = L.MAGIC
        finally:
            q.release()


class _Tables:
    """The symbol (or names) table and the named counters of a segment being written."""

    def _init_tables(self, seg: SegmentFile) -> None:
        self._seg = seg
        self._mm = seg.mm
        self._symbols: dict[str, int] = {}
        self._instruments: dict[str, Instrument | None] = {}
        self._counter_names: dict[str, int] = {}
        self.counters = np.frombuffer(seg.mm, np.uint64, L.MAX_COUNTERS, L.COUNTERS_OFFSET)

    def add_symbol(self, symbol: str, instrument: Instrument | None = None) -> int:
        """Register a symbol (with its normalized instrument); returns its id, its table index."""
        if symbol in self._symbols:
            return self._symbols[symbol]
        if not symbol:
            raise ValueError("a symbol name cannot be empty")
        name = _encode(symbol, 32, "symbol")
        if instrument is not None:
            instrument = Instrument(*instrument).validate()
            inst = (
                _encode(instrument.base, 12, "base")
                + _encode(instrument.quote, 12, "quote")
                + _encode(instrument.kind, 8, "kind")
            )
        else:
            inst = bytes(32)
        sid = len(self._symbols)
        if sid >= self._seg.max_symbols:
            raise ValueError(
                f"ring {self._seg.ring!r} is full: max_symbols={self._seg.max_symbols}"
            )
        off = self._seg.geo["symbols_offset"] + sid * L.SYMBOL_ENTRY
        self._mm[off : off + L.SYMBOL_ENTRY] = name + inst
        # The entry is stored before the count that publishes it.
        struct.pack_into("<I", self._mm, L.H_N_SYMBOLS, sid + 1)
        self._symbols[symbol] = sid
        self._instruments[symbol] = instrument
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
        off = L.COUNTER_NAMES_OFFSET + idx * L.NAME_BYTES
        self._mm[off : off + L.NAME_BYTES] = _encode(name, L.NAME_BYTES, "counter name")
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

    def _mark_closed(self) -> None:
        q = memoryview(self._mm).cast("Q")
        q[L.H_WRITER_PID >> 3] = 0
        q.release()


class RingWriter(_Tables):
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
        instruments: Mapping[str, Instrument] | None = None,
        capacity: int = 1 << 16,
        depth: int = 20,
        max_symbols: int = 256,
        exchange: str = "",
        counters: Sequence[str] = (),
        mode: int = 0o600,
        group: str = "",
    ) -> RingWriter:
        """Create (or reclaim from a dead writer) the segment /dev/shm/mdpipe.<instance>.<ring>.

        kind: "book", "trade", "ticker" or "candle". instruments: the normalized instrument of each symbol.
        mode/group: permissions of a new segment (e.g. 0o640 and the group of the readers).
        A segment whose writer is still alive is refused with WriterAliveError; one left by a
        dead writer is reused in place (same geometry and mode: next generation, cursor kept,
        so attached readers follow) or replaced.
        """
        seqlock.check_memory_model()
        kind_id = L.KIND_IDS.get(kind)
        if kind_id not in (L.KIND_BOOK, L.KIND_TRADE, L.KIND_TICKER, L.KIND_CANDLE):
            raise ValueError(f"kind must be 'book', 'trade', 'ticker' or 'candle', got {kind!r}")
        if capacity < 2 or capacity & (capacity - 1) or capacity > L.MAX_CAPACITY:
            raise ValueError(
                f"capacity must be a power of two in 2..{L.MAX_CAPACITY}, got {capacity}"
            )
        if kind_id != L.KIND_BOOK:
            depth = 0
        elif not 1 <= depth <= L.MAX_DEPTH:
            raise ValueError(f"depth must be 1..{L.MAX_DEPTH}, got {depth}")
        if not 1 <= max_symbols <= L.MAX_SYMBOLS:
            raise ValueError(f"max_symbols must be 1..{L.MAX_SYMBOLS}, got {max_symbols}")
        if len(symbols) > max_symbols:
            raise ValueError(f"{len(symbols)} symbols exceed max_symbols={max_symbols}")
        seg = SegmentFile(
            instance, ring, kind_id, capacity, depth, max_symbols, exchange, mode, group
        )
        self = object.__new__(cls)
        self._init(seg)
        instruments = instruments or {}
        for sym in symbols:
            self.add_symbol(sym, instruments.get(sym))
        for name in counters:
            self.counter_index(name)
        return self

    def _init(self, seg: SegmentFile) -> None:
        self._init_tables(seg)
        self.instance, self.ring, self.kind = seg.instance, seg.ring, seg.kind
        self.name = seg.name
        self.capacity, self.depth, self.max_symbols = seg.capacity, seg.depth, seg.max_symbols
        self.generation = seg.generation
        self.dtype = L.record_dtype(seg.kind, seg.depth)
        self.staging = np.zeros(1, self.dtype)
        self.record = self.staging[0]
        if seg.kind == L.KIND_BOOK:
            self.bids = self.staging["bids"][0]
            self.asks = self.staging["asks"][0]
        geo = seg.geo
        self._w = seqlock.Writer(
            seg.mm,
            self.staging,
            geo["slots_offset"],
            geo["latest_offset"],
            geo["slot_size"],
            seg.capacity,
            geo["record_size"],
            seg.max_symbols,
            self.dtype.fields["symbol_seq"][1],
            self.dtype.fields["commit_ts_ns"][1],
            seg.cursor,
        )
        # The hot path calls the seqlock writer directly: no Python frame in between.
        self.commit = self._w.commit
        self.commit_book = self._w.commit_book
        self.commit_trade = self._w.commit_trade
        self.heartbeat = self._w.heartbeat
        self._closed = False

    def commit(self, symbol_id: int) -> int:
        """Publish the staging record for symbol_id; returns its message number.

        Sets seq, commit_ts_ns and symbol_seq itself; every other field is the caller's.
        (While open, the instance attribute of the same name is the seqlock writer's method.)
        """
        raise ValueError(f"ring {self.ring!r}: the writer is closed")

    def commit_book(self, *args: int) -> int:
        """Publish a book record whose levels were written into self.bids / self.asks:
        (symbol_id, flags, exchange_ts_ns, recv_ts_ns, first_update_id, last_update_id,
        prev_update_id, bid_count, ask_count)."""
        raise ValueError(f"ring {self.ring!r}: the writer is closed")

    def commit_trade(self, *args: int | float) -> int:
        """Publish one trade record: (symbol_id, flags, exchange_ts_ns, event_ts_ns,
        recv_ts_ns, trade_id, first_trade_id, last_trade_id, price, qty, side)."""
        raise ValueError(f"ring {self.ring!r}: the writer is closed")

    def heartbeat(self) -> None:
        """Tell readers and stats the writer is alive while it has nothing to commit."""
        raise ValueError(f"ring {self.ring!r}: the writer is closed")

    @property
    def cursor(self) -> int:
        """Messages committed so far (over every generation of this segment)."""
        return self._w.cursor

    def close(self, *, unlink: bool = False) -> None:
        """Stop writing: mark the segment writer-less, and remove it when unlink is True."""
        if self._closed:
            return
        self._closed = True
        self._mark_closed()
        self._w.release()
        for attr in (
            "bids",
            "asks",
            "record",
            "staging",
            "counters",
            "commit",
            "commit_book",
            "commit_trade",
            "heartbeat",
        ):
            self.__dict__.pop(attr, None)
        # A caller may still hold a numpy view; then the mapping goes with the process.
        with contextlib.suppress(BufferError):
            self._mm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._seg.path)

    def __enter__(self) -> RingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
