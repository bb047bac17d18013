"""The shared-memory layout contract: header fields, tables and record dtypes (docs/layout.md).

Everything here is little-endian and 64-byte aligned. Any change to an offset, a dtype or
the meaning of a field bumps LAYOUT_VERSION; readers refuse a segment of another version.
"""

from __future__ import annotations

import json
import platform

import numpy as np

LAYOUT_VERSION = 1
MAGIC = int.from_bytes(b"MDPIPE\x00\x01", "little")
CACHE_LINE = 64
PAGE = 4096

# Record kinds; a status segment has counters but no slots (the publisher's).
KIND_BOOK = 1
KIND_TRADE = 2
KIND_STATUS = 3
KIND_NAMES = {KIND_BOOK: "book", KIND_TRADE: "trade", KIND_STATUS: "status"}
KIND_IDS = {name: kind for kind, name in KIND_NAMES.items()}

# Header page: byte offsets of every field (u64 unless noted).
H_MAGIC = 0
H_VERSION = 8  # u32
H_KIND = 12  # u32
H_CAPACITY = 16  # slots, a power of two (0 for status segments)
H_RECORD_SIZE = 24  # u32: dtype itemsize
H_DEPTH = 28  # u32: book levels per side (0 for trades)
H_MAX_SYMBOLS = 32  # u32
H_N_SYMBOLS = 36  # u32: symbols published in the table (written after the names)
H_N_COUNTERS = 40  # u32: counters named so far
H_SLOT_SIZE = 44  # u32: slot stride, record size rounded up to 64
H_SYMBOLS_OFFSET = 48
H_LATEST_OFFSET = 56
H_SLOTS_OFFSET = 64
H_SEGMENT_SIZE = 72
H_WRITER_PID = 80  # 0 once the writer closed cleanly
H_WRITER_START_TICKS = 88  # /proc/<pid>/stat starttime: tells a live writer from a reused pid
H_START_TIME_NS = 96  # wall clock when this generation started
H_GENERATION = 104  # bumped on every writer (re)start of this segment
H_WRITE_CURSOR = 128  # own cache line: messages committed so far
H_HEARTBEAT_NS = 192  # own cache line: wall clock of the writer's last sign of life
H_EXCHANGE = 256  # 32 bytes ascii, NUL padded
H_RING_NAME = 288  # 32 bytes ascii, NUL padded
H_COUNTERS = 512  # MAX_COUNTERS x u64
H_COUNTER_NAMES = 1024  # MAX_COUNTERS x 32 bytes ascii
H_DTYPE_DESCR = 3072  # 1024 bytes: JSON description of the record dtype, NUL padded
NAME_BYTES = 32
MAX_COUNTERS = 64
DTYPE_DESCR_BYTES = 1024
SYMBOL_ENTRY = 32  # symbol table entry: ascii name, NUL padded

# Book record flags.
FLAG_SYNCED = 1  # the book is exact by the exchange's sync rules
FLAG_PARTIAL = 2  # fewer levels than depth on a side (thin book), still exact
FLAG_RESYNC = 4  # first record after a (re)build: reset anything derived from earlier records
FLAG_CROSSED = 8  # best bid >= best ask: the exchange sent a crossed book (kept, flagged)
# Trade record flags.
FLAG_BUYER_MAKER = 1  # the buyer was the maker: the aggressor sold

BOOK_FIELDS_PREFIX: list[tuple[str, str]] = [
    ("seq", "<u8"),  # slot sequence word: 2*(message number + 1) once complete, odd while written
    ("symbol_id", "<u4"),
    ("flags", "<u4"),
    ("exchange_ts_ns", "<i8"),  # exchange event time (E)
    ("recv_ts_ns", "<i8"),  # local wall clock when the frame was received
    ("commit_ts_ns", "<i8"),  # local wall clock at ring commit
    ("first_update_id", "<u8"),  # U of the diff (or snapshot lastUpdateId)
    ("last_update_id", "<u8"),  # u of the diff (or snapshot lastUpdateId)
    ("prev_update_id", "<u8"),  # pu (futures); 0 on spot
    ("symbol_seq", "<u8"),  # per-symbol record number, 1-based, gap-free within a generation
    ("bid_count", "<u2"),
    ("ask_count", "<u2"),
    ("_pad0", "<u4"),
]

TRADE_FIELDS: list[tuple[str, str]] = [
    ("seq", "<u8"),
    ("symbol_id", "<u4"),
    ("flags", "<u4"),
    ("exchange_ts_ns", "<i8"),  # trade time (T)
    ("event_ts_ns", "<i8"),  # event time (E)
    ("recv_ts_ns", "<i8"),
    ("commit_ts_ns", "<i8"),
    ("trade_id", "<u8"),  # t, or the aggregate id a
    ("first_trade_id", "<u8"),  # f of an aggTrade, else = trade_id
    ("last_trade_id", "<u8"),  # l of an aggTrade, else = trade_id
    ("price", "<f8"),
    ("qty", "<f8"),
    ("symbol_seq", "<u8"),
    ("side", "i1"),  # +1 the aggressor bought, -1 it sold
    ("_pad0", "u1", (7,)),
]


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def book_dtype(depth: int) -> np.dtype:
    """The book record: a fixed header then depth x [price, qty] per side, best first."""
    if not 1 <= depth <= 1000:
        raise ValueError(f"depth must be 1..1000, got {depth}")
    fields = [*BOOK_FIELDS_PREFIX, ("bids", "<f8", (depth, 2)), ("asks", "<f8", (depth, 2))]
    return np.dtype(fields, align=True)


TRADE_DTYPE = np.dtype(TRADE_FIELDS, align=True)


def record_dtype(kind: int, depth: int) -> np.dtype | None:
    """The record dtype of a segment kind; None for status segments."""
    if kind == KIND_BOOK:
        return book_dtype(depth)
    if kind == KIND_TRADE:
        return TRADE_DTYPE
    if kind == KIND_STATUS:
        return None
    raise ValueError(f"unknown record kind {kind}")


def slot_size(dtype: np.dtype | None) -> int:
    """Slot stride: the record rounded up to whole cache lines."""
    return 0 if dtype is None else _round_up(dtype.itemsize, CACHE_LINE)


def describe_dtype(dtype: np.dtype | None) -> bytes:
    """The JSON description of a record dtype stored in the header, for readers in any language."""
    if dtype is None:
        return b"{}"
    fields = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        base = sub.base.str if sub.shape else sub.str
        fields.append({"name": name, "type": base, "shape": list(sub.shape), "offset": offset})
    text = json.dumps({"itemsize": dtype.itemsize, "fields": fields}, separators=(",", ":"))
    raw = text.encode()
    if len(raw) > DTYPE_DESCR_BYTES:
        raise ValueError("record dtype description does not fit the header")
    return raw


def segment_geometry(kind: int, capacity: int, depth: int, max_symbols: int) -> dict[str, int]:
    """Offsets and total size of a segment: header page, symbol table, latest table, slots."""
    dtype = record_dtype(kind, depth)
    stride = slot_size(dtype)
    symbols_offset = PAGE
    latest_offset = _round_up(symbols_offset + max_symbols * SYMBOL_ENTRY, PAGE)
    slots_offset = _round_up(latest_offset + max_symbols * stride, PAGE)
    size = _round_up(slots_offset + capacity * stride, PAGE)
    return {
        "record_size": 0 if dtype is None else dtype.itemsize,
        "slot_size": stride,
        "symbols_offset": symbols_offset,
        "latest_offset": latest_offset,
        "slots_offset": slots_offset,
        "segment_size": size,
    }


def check_memory_model() -> None:
    """Refuse to run the pure-Python seqlock where its ordering argument does not hold.

    The seqlock relies on x86-64's total store order: stores are not reordered with
    stores, nor loads with loads, and every numpy/memoryview access is an opaque C call
    the compiler cannot move across. Weakly ordered CPUs (ARM, POWER) need fences that
    Python cannot issue, so there a reader could accept a torn record.
    """
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        raise RuntimeError(
            f"mdpipe's shared-memory rings need x86-64 store ordering; this CPU is {machine!r}"
        )
