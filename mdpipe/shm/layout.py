"""The shared-memory layout: every header field, table and record field named once.

This module is the single description of the public contract. `docs/layout.md`'s tables and
`readers/c/mdpipe_layout.h` are generated from it (`python -m mdpipe.shm.layout`), and a test
fails when either has drifted. Any change to an offset, a type or a meaning bumps
LAYOUT_VERSION; readers refuse a segment of another version.

A segment, every section page-aligned, every slot on its own cache lines::

    0        4096                   45056               latest_offset      slots_offset   segment_size
    | header | counters | names     | symbol table      | latest table     | slots        |
      1 page   1024 x 8   1024 x 32   max_symbols x 64    max_symbols x      capacity x
                                                          slot_size          slot_size

The header page (byte offsets; u64 unless noted)::

      0 magic          8 version(u32)   12 kind(u32)     16 capacity
     24 record_size(u32) 28 depth(u32)  32 max_symbols(u32) 36 n_symbols(u32)
     40 n_counters(u32)  44 slot_size(u32)  48 symbols_offset  56 latest_offset
     64 slots_offset  72 segment_size  80 writer_pid  88 writer_start_ticks
     96 start_time_ns 104 generation
    128 write_cursor  (alone on its cache line: the only word readers poll)
    192 heartbeat_ns  (alone on its cache line)
    256 exchange[32]  288 ring_name[32]  512 dtype_descr[1024]

The counters section: 4096 counters[1024] (u64), 12288 counter_names[1024][32].

Everything is little-endian. Memory semantics: the writer publishes a slot with a release
store of its sequence word and readers load it with acquire (see mdpipe/shm/seqlock.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

LAYOUT_VERSION = 4
MAGIC = int.from_bytes(b"MDPIPE\x00\x01", "little")
CACHE_LINE = 64
PAGE = 4096

# Record kinds. A status segment has counters and a names table but no slots.
KIND_BOOK = 1
KIND_TRADE = 2
KIND_STATUS = 3
KIND_TICKER = 4
KIND_CANDLE = 5
KIND_NAMES = {
    KIND_BOOK: "book",
    KIND_TRADE: "trade",
    KIND_STATUS: "status",
    KIND_TICKER: "ticker",
    KIND_CANDLE: "candle",
}
KIND_IDS = {name: kind for kind, name in KIND_NAMES.items()}

# Sane maxima: a header claiming more is refused before anything is allocated or mapped.
MAX_CAPACITY = 1 << 24
MAX_DEPTH = 1000
MAX_SYMBOLS = 65536
MAX_SEGMENT_BYTES = 1 << 36

NAME_BYTES = 32
MAX_COUNTERS = 1024  # a publisher keeps two per ring it reads: room for ~500 rings
DTYPE_DESCR_BYTES = 1024


@dataclass(frozen=True)
class Field:
    """One named field of the header or of a table entry."""

    name: str
    offset: int
    ctype: str  # "u64", "u32", "char[N]", "u64[N]", "char[N][M]"
    size: int
    doc: str


class _Builder:
    """Lays fields out one after another, so every offset derives from the one before."""

    def __init__(self) -> None:
        self.fields: list[Field] = []
        self.offset = 0

    def add(self, name: str, ctype: str, size: int, doc: str, *, align: int = 0) -> Field:
        if align:
            self.offset = (self.offset + align - 1) // align * align
        natural = 1 if ctype.startswith("char") else 8 if ctype.startswith("u64") else 4
        if self.offset % natural:
            raise AssertionError(f"{name} would be misaligned at {self.offset}")
        f = Field(name, self.offset, ctype, size, doc)
        self.fields.append(f)
        self.offset += size
        return f


_h = _Builder()
H_MAGIC = _h.add(
    "magic", "u64", 8, '"MDPIPE\\0\\1" read as a little-endian u64; written last'
).offset
H_VERSION = _h.add("layout_version", "u32", 4, f"{LAYOUT_VERSION}").offset
H_KIND = _h.add(
    "kind", "u32", 4, "1 book, 2 trade, 3 status (counters only, no slots), 4 ticker, 5 candle"
).offset
H_CAPACITY = _h.add("capacity", "u64", 8, "slots, a power of two <= 2^24 (0 for status)").offset
H_RECORD_SIZE = _h.add("record_size", "u32", 4, "itemsize of the record dtype").offset
H_DEPTH = _h.add("depth", "u32", 4, "levels per side of a book record (0 otherwise)").offset
H_MAX_SYMBOLS = _h.add(
    "max_symbols", "u32", 4, "entries reserved in the symbol and latest tables"
).offset
H_N_SYMBOLS = _h.add("n_symbols", "u32", 4, "entries published (stored after the entries)").offset
H_N_COUNTERS = _h.add("n_counters", "u32", 4, "counters named (stored after the names)").offset
H_SLOT_SIZE = _h.add("slot_size", "u32", 4, "slot stride: record_size rounded up to 64").offset
H_SYMBOLS_OFFSET = _h.add(
    "symbols_offset", "u64", 8, "byte offset of the symbol table, after the counters"
).offset
H_LATEST_OFFSET = _h.add("latest_offset", "u64", 8, "byte offset of the latest table").offset
H_SLOTS_OFFSET = _h.add("slots_offset", "u64", 8, "byte offset of slot 0").offset
H_SEGMENT_SIZE = _h.add("segment_size", "u64", 8, "total bytes; equals the file size").offset
H_WRITER_PID = _h.add("writer_pid", "u64", 8, "0 once the writer closed cleanly").offset
H_WRITER_START_TICKS = _h.add(
    "writer_start_ticks",
    "u64",
    8,
    "/proc/<pid>/stat field 22, so a reused pid is not taken for the writer",
).offset
H_START_TIME_NS = _h.add(
    "start_time_ns", "u64", 8, "wall clock when this generation started"
).offset
H_GENERATION = _h.add(
    "generation", "u64", 8, "1 for a new segment; +1 on every writer (re)start"
).offset
H_WRITE_CURSOR = _h.add(
    "write_cursor", "u64", 8, "messages committed so far; alone on its cache line", align=CACHE_LINE
).offset
H_HEARTBEAT_NS = _h.add(
    "heartbeat_ns",
    "u64",
    8,
    "wall clock of the last commit or heartbeat; own cache line",
    align=CACHE_LINE,
).offset
H_EXCHANGE = _h.add(
    "exchange",
    f"char[{NAME_BYTES}]",
    NAME_BYTES,
    'venue and market, e.g. "binance-futures"',
    align=CACHE_LINE,
).offset
H_RING_NAME = _h.add("ring_name", f"char[{NAME_BYTES}]", NAME_BYTES, "the ring's name").offset
H_DTYPE_DESCR = _h.add(
    "dtype_descr",
    f"char[{DTYPE_DESCR_BYTES}]",
    DTYPE_DESCR_BYTES,
    'JSON {"itemsize", "fields": [[name, type, shape, offset], ...]} of the record, NUL padded',
    align=512,
).offset
HEADER_FIELDS: tuple[Field, ...] = tuple(_h.fields)
if _h.offset > PAGE:
    raise AssertionError("the header outgrew its page")

# The counters section, on pages of its own after the header: counter i's value and name.
# Only the writer writes it; a name is written before n_counters covers it.
_c = _Builder()
_c.offset = PAGE
COUNTERS_OFFSET = _c.add(
    "counters", f"u64[{MAX_COUNTERS}]", 8 * MAX_COUNTERS, "written by the writer only"
).offset
COUNTER_NAMES_OFFSET = _c.add(
    "counter_names",
    f"char[{MAX_COUNTERS}][{NAME_BYTES}]",
    MAX_COUNTERS * NAME_BYTES,
    'name of counter i; names starting "g_" are gauges, the others only increase',
).offset
COUNTER_FIELDS: tuple[Field, ...] = tuple(_c.fields)
TABLES_OFFSET = (_c.offset + PAGE - 1) // PAGE * PAGE  # the symbol table starts here

# A symbol-table entry: the venue's own name and the normalized instrument beside it.
_s = _Builder()
S_NAME = _s.add("name", "char[32]", 32, "the venue's symbol, e.g. BTCUSDT or BTC-USDT-SWAP").offset
S_BASE = _s.add("base", "char[12]", 12, "normalized base asset, e.g. BTC (empty if unknown)").offset
S_QUOTE = _s.add("quote", "char[12]", 12, "normalized quote asset, e.g. USDT").offset
S_KIND = _s.add("kind", "char[8]", 8, "perp, spot, future or option").offset
SYMBOL_FIELDS: tuple[Field, ...] = tuple(_s.fields)
SYMBOL_ENTRY = _s.offset  # 64 bytes

# Book record flags.
FLAG_SYNCED = 1  # the book is exact by the exchange's sync rules
FLAG_PARTIAL = 2  # fewer levels than depth on a side (thin book), still exact
FLAG_RESYNC = 4  # first record after a (re)build: reset anything derived from earlier records
FLAG_CROSSED = 8  # best bid >= best ask: the exchange sent a crossed book (kept, flagged)
FLAG_REPLAYED = 16  # written by a replay of history, not by a live feed
# Trade record flags.
FLAG_BUYER_MAKER = 1  # the buyer was the maker: the aggressor sold
# FLAG_REPLAYED (16) marks trade records written by a replay of history too.

BOOK_FLAGS = {
    "SYNCED": (FLAG_SYNCED, "exact by the exchange's sync rules"),
    "PARTIAL": (FLAG_PARTIAL, "a side has fewer than depth levels (thin book), still exact"),
    "RESYNC": (FLAG_RESYNC, "first record after a (re)build: reset derived state"),
    "CROSSED": (FLAG_CROSSED, "best bid >= best ask as sent by the exchange"),
    "REPLAYED": (FLAG_REPLAYED, "written by a replay of history"),
}

# (name, numpy type, meaning): the record fields, in order; offsets follow from the dtype.
BOOK_FIELDS_PREFIX: list[tuple[str, str, str]] = [
    ("seq", "<u8", "seqlock word: 2n+1 while message n is written, 2n+2 once complete"),
    ("symbol_id", "<u4", "index in the symbol table"),
    ("flags", "<u4", "SYNCED 1, PARTIAL 2, RESYNC 4, CROSSED 8, REPLAYED 16; 0 = not synced"),
    ("exchange_ts_ns", "<i8", "exchange event time, ns since the epoch"),
    ("recv_ts_ns", "<i8", "local wall clock when the frame was received"),
    ("commit_ts_ns", "<i8", "local wall clock at ring commit"),
    ("first_update_id", "<u8", "first update id of the diff (the snapshot's id for a snapshot)"),
    ("last_update_id", "<u8", "last update id of the diff"),
    (
        "prev_update_id",
        "<u8",
        "the venue's previous update id (Binance pu, OKX prevSeqId); 0 if none",
    ),
    ("symbol_seq", "<u8", "per-symbol record number, 1-based, gap-free within a generation"),
    ("bid_count", "<u2", "valid levels in bids"),
    ("ask_count", "<u2", "valid levels in asks"),
    ("_pad0", "<u4", "zero"),
]

TRADE_FIELDS: list[tuple[str, str, str]] = [
    ("seq", "<u8", "seqlock word"),
    ("symbol_id", "<u4", "index in the symbol table"),
    ("flags", "<u4", "BUYER_MAKER 1: the buyer was the maker, so the aggressor sold; REPLAYED 16"),
    ("exchange_ts_ns", "<i8", "trade time"),
    ("event_ts_ns", "<i8", "event time of the message"),
    ("recv_ts_ns", "<i8", "local receive time"),
    ("commit_ts_ns", "<i8", "ring commit time"),
    ("trade_id", "<u8", "the venue's trade id (or aggregate id)"),
    ("first_trade_id", "<u8", "first trade id an aggregate covers, else trade_id"),
    ("last_trade_id", "<u8", "last trade id an aggregate covers, else trade_id"),
    ("price", "<f8", "price"),
    ("qty", "<f8", "quantity"),
    ("symbol_seq", "<u8", "per-symbol record number"),
    ("side", "i1", "+1 the aggressor bought, -1 it sold"),
    ("_pad0", "u1", "zero"),
]
_TRADE_PAD = 7

# Ticker record: the venue's derivatives and 24-hour statistics for one symbol, merged from
# every stream that carries them. A field the venue never sent is NaN (0 for times) with its
# bit clear in `filled`; never a guessed value.
TICKER_VALUES: list[tuple[str, str, str]] = [
    ("mark_price", "<f8", "mark price"),
    ("index_price", "<f8", "index price"),
    ("funding_rate", "<f8", "current (predicted) funding rate, e.g. 0.0001 = 0.01 %"),
    ("next_funding_ts_ns", "<i8", "time of the next funding, ns since the epoch (0 if unsent)"),
    ("open_interest", "<f8", "open interest, in contracts or base units as the venue counts"),
    ("last_price", "<f8", "last traded price"),
    ("bid_price", "<f8", "best bid, as the ticker stream sent it"),
    ("bid_qty", "<f8", "best bid quantity"),
    ("ask_price", "<f8", "best ask"),
    ("ask_qty", "<f8", "best ask quantity"),
    ("open_24h", "<f8", "price 24 h ago"),
    ("high_24h", "<f8", "24 h high"),
    ("low_24h", "<f8", "24 h low"),
    ("volume_24h", "<f8", "24 h volume, base units (contracts where the venue counts so)"),
    ("quote_volume_24h", "<f8", "24 h volume, quote units"),
]
TICKER_BITS = {name: 1 << i for i, (name, _, _) in enumerate(TICKER_VALUES)}
TICKER_FIELDS: list[tuple[str, str, str]] = [
    ("seq", "<u8", "seqlock word"),
    ("symbol_id", "<u4", "index in the symbol table"),
    ("flags", "<u4", "RESYNC 4: first record of this symbol since the writer started"),
    ("exchange_ts_ns", "<i8", "event time of the venue message this record applies"),
    ("recv_ts_ns", "<i8", "local receive time"),
    ("commit_ts_ns", "<i8", "ring commit time"),
    ("symbol_seq", "<u8", "per-symbol record number"),
    ("filled", "<u8", "bit i set: value field i (below, from mark_price = bit 0) holds data"),
    ("updated", "<u8", "bits of the value fields this record's venue message carried"),
    *TICKER_VALUES,
]

# Candle record: OHLCV of one interval built from the trades ring by exchange trade time.
FLAG_CANDLE_AMENDED = 1  # a late trade changed this candle after it was first published
FLAG_CANDLE_RESTART = 2  # the writer (re)started inside this interval: trades may be missing
FLAG_CANDLE_OPEN = 4  # the interval had not closed yet (published at writer shutdown)
CANDLE_FLAGS = {
    "AMENDED": (FLAG_CANDLE_AMENDED, "a late trade amended it; revision counts amendments"),
    "RESTART": (FLAG_CANDLE_RESTART, "the writer (re)started inside the interval"),
    "OPEN": (FLAG_CANDLE_OPEN, "published before the interval closed (writer stopping)"),
}
CANDLE_FIELDS: list[tuple[str, str, str]] = [
    ("seq", "<u8", "seqlock word"),
    ("symbol_id", "<u4", "index in the symbol table"),
    ("flags", "<u4", "AMENDED 1, RESTART 2, OPEN 4"),
    ("open_ts_ns", "<i8", "interval start (exchange trade time), ns since the epoch"),
    ("interval_ns", "<i8", "interval length"),
    ("recv_ts_ns", "<i8", "local receive time of the last trade in the candle"),
    ("commit_ts_ns", "<i8", "ring commit time"),
    ("symbol_seq", "<u8", "per-symbol record number"),
    ("first_trade_id", "<u8", "first trade id in the candle"),
    ("last_trade_id", "<u8", "last trade id in the candle"),
    ("trades", "<u8", "trades in the candle (an aggregate counts its trades)"),
    ("open", "<f8", "first trade price"),
    ("high", "<f8", "highest trade price"),
    ("low", "<f8", "lowest trade price"),
    ("close", "<f8", "last trade price"),
    ("volume", "<f8", "sum of quantities"),
    ("quote_volume", "<f8", "sum of price x quantity"),
    ("taker_buy_volume", "<f8", "sum of quantities where the aggressor bought"),
    ("revision", "<u4", "0 when first published; +1 per amendment by a late trade"),
    ("_pad0", "<u4", "zero"),
]


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def book_dtype(depth: int) -> np.dtype:
    """The book record: a fixed header then depth x [price, qty] per side, best first."""
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be 1..{MAX_DEPTH}, got {depth}")
    fields = [(n, t) for n, t, _ in BOOK_FIELDS_PREFIX]
    fields += [("bids", "<f8", (depth, 2)), ("asks", "<f8", (depth, 2))]
    return np.dtype(fields, align=True)


TRADE_DTYPE = np.dtype(
    [(n, t, (_TRADE_PAD,)) if n == "_pad0" else (n, t) for n, t, _ in TRADE_FIELDS], align=True
)

TICKER_DTYPE = np.dtype([(n, t) for n, t, _ in TICKER_FIELDS], align=True)
CANDLE_DTYPE = np.dtype([(n, t) for n, t, _ in CANDLE_FIELDS], align=True)

# Byte offsets of the book record's fields that the hot paths touch.
_BOOK_PREFIX = book_dtype(1)
BOOK_OFFSETS = {name: _BOOK_PREFIX.fields[name][1] for name, _, _ in BOOK_FIELDS_PREFIX}
BOOK_LEVELS_OFFSET = _BOOK_PREFIX.fields["bids"][1]  # bids[0]; asks[0] at + 16 * depth
TRADE_OFFSETS = {name: TRADE_DTYPE.fields[name][1] for name, _, _ in TRADE_FIELDS}


def record_dtype(kind: int, depth: int) -> np.dtype | None:
    """The record dtype of a segment kind; None for status segments."""
    if kind == KIND_BOOK:
        return book_dtype(depth)
    if kind == KIND_TRADE:
        return TRADE_DTYPE
    if kind == KIND_TICKER:
        return TICKER_DTYPE
    if kind == KIND_CANDLE:
        return CANDLE_DTYPE
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
        fields.append([name, base, list(sub.shape), offset])
    raw = json.dumps({"itemsize": dtype.itemsize, "fields": fields}, separators=(",", ":")).encode()
    if len(raw) > DTYPE_DESCR_BYTES:
        raise ValueError("record dtype description does not fit the header")
    return raw


def segment_geometry(kind: int, capacity: int, depth: int, max_symbols: int) -> dict[str, int]:
    """Offsets and total size of a segment: header page, symbol table, latest table, slots."""
    dtype = record_dtype(kind, depth)
    stride = slot_size(dtype)
    symbols_offset = TABLES_OFFSET
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


# ----- generated views of this descriptor -------------------------------------------------


def _record_rows(dtype: np.dtype, docs: dict[str, str]) -> list[tuple[int, str, str, str]]:
    rows = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        base = sub.base if sub.shape else sub
        t = {"u": "u", "i": "i", "f": "f"}[base.kind] + str(base.itemsize * 8)
        shape = "".join(f"[{d}]" for d in sub.shape)
        rows.append((offset, name, t + shape, docs.get(name, "")))
    return rows


def markdown_tables() -> str:
    """The field tables of docs/layout.md, generated (docs/layout.md embeds this text)."""
    out = ["### Header page", "", "| offset | field | type | meaning |", "|---|---|---|---|"]
    out += [f"| {f.offset} | {f.name} | {f.ctype} | {f.doc} |" for f in HEADER_FIELDS]
    out += ["", f"### Counters section (pages {COUNTERS_OFFSET}..{TABLES_OFFSET})", ""]
    out += ["| offset | field | type | meaning |", "|---|---|---|---|"]
    out += [f"| {f.offset} | {f.name} | {f.ctype} | {f.doc} |" for f in COUNTER_FIELDS]
    out += ["", f"### Symbol table entry ({SYMBOL_ENTRY} bytes, ascii, NUL padded)", ""]
    out += ["| offset | field | type | meaning |", "|---|---|---|---|"]
    out += [f"| {f.offset} | {f.name} | {f.ctype} | {f.doc} |" for f in SYMBOL_FIELDS]
    book_docs = {n: d for n, _, d in BOOK_FIELDS_PREFIX}
    book_docs["bids"] = "[price, quantity], best (highest) first; unused levels zero"
    book_docs["asks"] = "[price, quantity], best (lowest) first"
    depth = 20
    out += [
        "",
        f"### Book record (kind 1): {BOOK_LEVELS_OFFSET} + 32·D bytes (D = depth; shown for D = {depth})",
        "",
    ]
    out += ["| offset | field | type | meaning |", "|---|---|---|---|"]
    out += [
        f"| {o} | {n} | {t} | {d} |" for o, n, t, d in _record_rows(book_dtype(depth), book_docs)
    ]
    out += ["", f"### Trade record (kind 2): {TRADE_DTYPE.itemsize} bytes", ""]
    out += ["| offset | field | type | meaning |", "|---|---|---|---|"]
    trade_docs = {n: d for n, _, d in TRADE_FIELDS}
    out += [f"| {o} | {n} | {t} | {d} |" for o, n, t, d in _record_rows(TRADE_DTYPE, trade_docs)]
    for title, dtype, fields in (
        (f"Ticker record (kind {KIND_TICKER})", TICKER_DTYPE, TICKER_FIELDS),
        (f"Candle record (kind {KIND_CANDLE})", CANDLE_DTYPE, CANDLE_FIELDS),
    ):
        out += ["", f"### {title}: {dtype.itemsize} bytes", ""]
        out += ["| offset | field | type | meaning |", "|---|---|---|---|"]
        docs = {n: d for n, _, d in fields}
        out += [f"| {o} | {n} | {t} | {d} |" for o, n, t, d in _record_rows(dtype, docs)]
    out += ["", "### Book flags", "", "| bit | name | meaning |", "|---|---|---|"]
    out += [f"| {v} | {k} | {d} |" for k, (v, d) in BOOK_FLAGS.items()]
    out += ["", "### Ticker `filled` / `updated` bits", "", "| bit | field |", "|---|---|"]
    out += [f"| {v} | {k} |" for k, v in TICKER_BITS.items()]
    out += ["", "### Candle flags", "", "| bit | name | meaning |", "|---|---|---|"]
    out += [f"| {v} | {k} | {d} |" for k, (v, d) in CANDLE_FLAGS.items()]
    return "\n".join(out) + "\n"


_C_TYPES = {"u": "uint", "i": "int"}


def c_header() -> str:
    """readers/c/mdpipe_layout.h, generated: every offset and record struct of this layout."""
    lines = [
        "/* mdpipe_layout.h - GENERATED by `python -m mdpipe.shm.layout --c-header` from",
        " * mdpipe/shm/layout.py. Do not edit: a test fails when it differs from the generator. */",
        "#ifndef MDPIPE_LAYOUT_H",
        "#define MDPIPE_LAYOUT_H",
        "#include <stdint.h>",
        "",
        f"#define MDP_LAYOUT_VERSION {LAYOUT_VERSION}u",
        f"#define MDP_MAGIC 0x{MAGIC:016X}ULL",
        f"#define MDP_PAGE {PAGE}",
        f"#define MDP_CACHE_LINE {CACHE_LINE}",
        f"#define MDP_KIND_BOOK {KIND_BOOK}u",
        f"#define MDP_KIND_TRADE {KIND_TRADE}u",
        f"#define MDP_KIND_STATUS {KIND_STATUS}u",
        f"#define MDP_KIND_TICKER {KIND_TICKER}u",
        f"#define MDP_KIND_CANDLE {KIND_CANDLE}u",
        f"#define MDP_MAX_CAPACITY {MAX_CAPACITY}ULL",
        f"#define MDP_MAX_DEPTH {MAX_DEPTH}u",
        f"#define MDP_MAX_SYMBOLS {MAX_SYMBOLS}u",
        f"#define MDP_MAX_COUNTERS {MAX_COUNTERS}u",
        f"#define MDP_MAX_SEGMENT_BYTES {MAX_SEGMENT_BYTES}ULL",
        f"#define MDP_NAME_BYTES {NAME_BYTES}",
        "",
        "/* Header offsets. */",
    ]
    lines += [f"#define MDP_H_{f.name.upper()} {f.offset}" for f in HEADER_FIELDS]
    lines += ["", "/* The counters section; the tables start at MDP_TABLES_OFFSET. */"]
    lines += [f"#define MDP_{f.name.upper()}_OFFSET {f.offset}" for f in COUNTER_FIELDS]
    lines += [f"#define MDP_TABLES_OFFSET {TABLES_OFFSET}"]
    lines += ["", f"#define MDP_SYMBOL_ENTRY {SYMBOL_ENTRY}"]
    lines += [f"#define MDP_S_{f.name.upper()} {f.offset}" for f in SYMBOL_FIELDS]
    lines += [""]
    lines += [f"#define MDP_FLAG_{k} {v}u" for k, (v, _) in BOOK_FLAGS.items()]
    lines += [f"#define MDP_FLAG_BUYER_MAKER {FLAG_BUYER_MAKER}u"]
    lines += [f"#define MDP_CANDLE_{k} {v}u" for k, (v, _) in CANDLE_FLAGS.items()]
    lines += [f"#define MDP_TICKER_HAS_{k.upper()} {v}ULL" for k, v in TICKER_BITS.items()]
    lines += [""]

    def struct(cname: str, dtype: np.dtype, skip: tuple[str, ...] = ()) -> list[str]:
        body = ["typedef struct {"]
        for name in dtype.names:
            if name in skip:
                continue
            sub = dtype.fields[name][0]
            base = sub.base if sub.shape else sub
            ctype = "double" if base.kind == "f" else f"{_C_TYPES[base.kind]}{base.itemsize * 8}_t"
            dims = "".join(f"[{d}]" for d in sub.shape)
            body.append(f"    {ctype} {name}{dims};")
        body.append(f"}} {cname};")
        return body

    lines += [
        "/* Book record header; levels follow: bids[depth][2] then asks[depth][2] (doubles). */"
    ]
    lines += struct("mdp_book_record", book_dtype(1), skip=("bids", "asks"))
    lines += [f"#define MDP_BOOK_LEVELS_OFFSET {BOOK_LEVELS_OFFSET}", ""]
    lines += struct("mdp_trade_record", TRADE_DTYPE)
    lines += [f"#define MDP_TRADE_RECORD_SIZE {TRADE_DTYPE.itemsize}", ""]
    lines += struct("mdp_ticker_record", TICKER_DTYPE)
    lines += [f"#define MDP_TICKER_RECORD_SIZE {TICKER_DTYPE.itemsize}", ""]
    lines += struct("mdp_candle_record", CANDLE_DTYPE)
    lines += [f"#define MDP_CANDLE_RECORD_SIZE {CANDLE_DTYPE.itemsize}", ""]
    for name, off in BOOK_OFFSETS.items():
        lines.append(f"#define MDP_BOOK_{name.upper()} {off}")
    for name, off in TRADE_OFFSETS.items():
        lines.append(f"#define MDP_TRADE_{name.upper()} {off}")
    lines += ["", "#endif /* MDPIPE_LAYOUT_H */", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--c-header"]:
        sys.stdout.write(c_header())
    elif sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown_tables())
    else:
        sys.exit("usage: python -m mdpipe.shm.layout --c-header | --markdown")
