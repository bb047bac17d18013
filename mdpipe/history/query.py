"""Queries over the archive: DuckDB, embedded, reading the Parquet files of one symbol's days.

Only the directories of the kind (a candle interval's own), the symbol (and venue) and the
days in the range are read. A file that is not valid Parquet is skipped and named (a
HistoryWarning, and in `skipped`), never a traceback; an unknown symbol, venue or candle
interval and an empty range are a HistoryError saying so. Candles come at their newest
revision per interval unless every revision is asked for (`revisions=True`).
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from mdpipe.candles import parse_interval
from mdpipe.history import schema
from mdpipe.history.store import KINDS, SORTED_KEY, kind_dir, kind_dirs, safe_part

log = logging.getLogger("mdpipe.history")

DEFAULT_DIR = "var/history"  # history.dir's default
FORMATS = ("arrow", "pandas", "numpy")
_MAX_RETRIES = 100  # files DuckDB may reject one by one before a query gives up


class HistoryError(ValueError):
    """A query that cannot be answered: unknown symbol or venue, empty range, bad argument."""


class HistoryWarning(UserWarning):
    """A file of the archive was skipped (not valid Parquet)."""


def parse_time(
    text: str | int | float | datetime | date | None, what: str, *, end: bool = False
) -> int | None:
    """A time as ns since the epoch (UTC): ISO 8601 text ('2026-12-01', '2026-12-01T10:30',
    with or without an offset; naive means UTC), a datetime or date, or ns as an int.
    A bare date as the end of a range means the end of that day."""
    if text is None:
        return None
    if isinstance(text, bool):
        raise HistoryError(f"{what}: {text!r} is not a time")
    if isinstance(text, int | float):
        return int(text)
    if isinstance(text, datetime):
        dt = text
    elif isinstance(text, date):
        dt = datetime(text.year, text.month, text.day) + (timedelta(days=1) if end else timedelta())
    else:
        s = str(text).strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
                dt = datetime.fromisoformat(s) + (timedelta(days=1) if end else timedelta())
            else:
                dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            raise HistoryError(
                f"{what}: {text!r} is not a time (use e.g. 2026-12-01 or 2026-12-01T10:30:00)"
            ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Selection:
    """The files a query reads, and those it skipped."""

    files: list[Path] = field(default_factory=list)
    skipped: dict[Path, str] = field(default_factory=dict)
    in_order: bool = False  # the files, in this order, hold their rows in ts order
    ranges: dict[Path, tuple[int, int] | None] = field(default_factory=dict)  # ts min, max


def _ts_range(meta: pq.FileMetaData) -> tuple[int, int] | None:
    """(min, max) of a file's ts column from its row-group statistics, if it is in ts order."""
    if (meta.metadata or {}).get(SORTED_KEY) != b"1":
        return None
    ix = meta.schema.names.index("ts") if "ts" in meta.schema.names else -1
    lo = hi = None
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(ix).statistics if ix >= 0 else None
        if st is None or not st.has_min_max:
            return None
        gmin, gmax = int(st.min_raw), int(st.max_raw)  # int64 ns: no datetime
        lo = gmin if lo is None else min(lo, gmin)
        hi = gmax if hi is None else max(hi, gmax)
    return (lo, hi) if lo is not None else None


def symbols(
    kind: str = "trades", root: str | Path | None = None, *, interval: str | None = None
) -> dict[str, list[str]]:
    """Every archived symbol of a kind, with the venues it was archived from (candles: of
    that interval, or of any interval when interval is None)."""
    _check_kind(kind)
    root = Path(root or DEFAULT_DIR)
    if kind == "candles" and interval is None:
        dirs = [d for d in kind_dirs(root) if d.startswith("candles_")]
    else:
        dirs = [kind_dir(kind, interval)]
    out: dict[str, list[str]] = {}
    for d in dirs:
        for sym_dir in sorted((root / d).glob("venue=*/symbol=*")):
            venues = out.setdefault(sym_dir.name[len("symbol=") :], [])
            if (v := sym_dir.parent.name[len("venue=") :]) not in venues:
                venues.append(v)
    return out


def intervals(root: str | Path | None = None) -> list[str]:
    """The candle intervals in the archive, shortest first (e.g. ['1s', '1m'])."""
    found = [d[len("candles_") :] for d in kind_dirs(Path(root or DEFAULT_DIR))]
    return sorted((i for i in found if i[:1].isdigit()), key=parse_interval)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise HistoryError(f"kind {kind!r}: use one of {', '.join(KINDS)}")


def _check_interval(kind: str, interval: str | None, root: Path) -> str | None:
    """The kind's interval (candles only), checked: a HistoryError naming what is archived."""
    if kind != "candles":
        if interval is not None:
            raise HistoryError(f"interval: only candles have one, not {kind}")
        return None
    try:
        parse_interval(interval)
    except ValueError as exc:
        raise HistoryError(str(exc)) from None
    if root.is_dir() and not (root / kind_dir(kind, interval)).is_dir():
        have = ", ".join(intervals(root)) or "none yet"
        raise HistoryError(
            f"interval {interval!r}: no {interval} candles archived (archived: {have})"
        )
    return interval


def _what(kdir: str) -> str:
    """How a kind directory reads in a message: trades, 1m candles."""
    return f"{kdir[len('candles_') :]} candles" if kdir.startswith("candles_") else kdir


def select(
    kind: str, symbol: str, start_ns: int, end_ns: int, venue: str | None, root: Path
) -> Selection:
    """The Parquet files of symbol's days in [start_ns, end_ns), their footers checked;
    kind is the kind directory (trades, books, tickers, candles_1m, ...)."""
    if not root.is_dir():
        raise HistoryError(f"no history archive at {root} (is [history] enabled? history.dir)")
    sym = safe_part(symbol)
    sym_dirs = sorted((root / kind).glob(f"venue=*/symbol={sym}"))
    if not sym_dirs:
        known = sorted({p.name[len("symbol=") :] for p in (root / kind).glob("venue=*/symbol=*")})
        listing = ", ".join(known[:30]) + (" ..." if len(known) > 30 else "") or "none yet"
        raise HistoryError(
            f"unknown symbol {symbol!r}: no archived {_what(kind)} (archived: {listing})"
        )
    if venue is not None:
        venues = [d.parent.name[len("venue=") :] for d in sym_dirs]
        sym_dirs = [d for d in sym_dirs if d.parent.name == f"venue={safe_part(venue)}"]
        if not sym_dirs:
            raise HistoryError(
                f"unknown venue {venue!r} for {symbol}: archived from {', '.join(venues)}"
            )
    first = datetime.fromtimestamp(start_ns / 1e9, UTC).date() if start_ns > 0 else date.min
    last = datetime.fromtimestamp((end_ns - 1) / 1e9, UTC).date() if end_ns < 2**62 else date.max
    sel = Selection()
    for sym_dir in sym_dirs:
        for day_dir in sorted(sym_dir.glob("date=*")):
            try:
                day = date.fromisoformat(day_dir.name[len("date=") :])
            except ValueError:
                continue
            if first <= day <= last:
                sel.files.extend(sorted(day_dir.glob("*.parquet")))
    good: list[tuple[tuple[int, int] | None, Path]] = []
    for path in sel.files:
        try:
            meta = pq.read_metadata(path)
        except (OSError, pa.ArrowException) as exc:
            sel.skipped[path] = str(exc).splitlines()[0]
            continue
        good.append((_ts_range(meta) if meta.num_rows else (0, 0), path))
    sel.ranges = {p: r for r, p in good}
    sel.files = [p for _, p in good]
    sel.files, sel.in_order = in_time_order(sel.files, sel.ranges)
    return sel


def in_time_order(
    files: list[Path], ranges: dict[Path, tuple[int, int] | None]
) -> tuple[list[Path], bool]:
    """The files ordered by time, and whether reading them in that order gives ts order."""
    if not files or any(ranges.get(f) is None for f in files):
        return files, False
    files = sorted(files, key=lambda f: (ranges[f], str(f)))
    ordered = all(ranges[a][1] <= ranges[b][0] for a, b in zip(files, files[1:], strict=False))
    return files, ordered


# A candle amended by a late trade is archived once per revision: the newest is the last
# committed record of its interval (after a writer restart, the one of the newer run).
_NEWEST = (
    " QUALIFY row_number() OVER (PARTITION BY ts ORDER BY commit_ts_ns DESC, symbol_seq DESC) = 1"
)


def _sql(
    files: list[Path],
    where: str | None,
    in_order: bool,
    columns: list[str] | None,
    newest_only: bool = False,
) -> str:
    listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    wanted = "*" if columns is None else ", ".join(f'"{c}"' for c in columns)
    # Files in ts order that do not overlap are read in order (DuckDB keeps insertion order).
    # Venue and symbol are the directory names, added afterwards as one-value dictionaries.
    return (
        f"SELECT {wanted} FROM read_parquet([{listing}], hive_partitioning = false)"
        + (f" WHERE {where}" if where else "")
        + (_NEWEST if newest_only else "")
        + ("" if in_order and not newest_only else " ORDER BY ts")
    )


def _constant(value: str, n: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value]))


def _venue_of(path: Path) -> str:
    return path.parent.parent.parent.name[len("venue=") :]


def _query_venue(
    con: duckdb.DuckDBPyConnection,
    sel: Selection,
    files: list[Path],
    start_ns: int,
    end_ns: int,
    columns: list[str] | None,
    newest_only: bool,
) -> pa.Table:
    files, in_order = in_time_order(files, sel.ranges)
    inside = all(
        (r := sel.ranges.get(f)) is not None and r[0] >= start_ns and r[1] < end_ns for f in files
    )
    where = None if inside else f"epoch_ns(ts) >= {start_ns} AND epoch_ns(ts) < {end_ns}"
    table = con.sql(_sql(files, where, in_order, columns, newest_only)).to_arrow_table()
    symbol = files[0].parent.parent.name[len("symbol=") :]
    table = table.append_column("symbol", _constant(symbol, table.num_rows))
    return table.append_column("venue", _constant(_venue_of(files[0]), table.num_rows))


def _read(
    con: duckdb.DuckDBPyConnection,
    sel: Selection,
    start_ns: int,
    end_ns: int,
    columns: list[str] | None = None,
    newest_only: bool = False,
) -> pa.Table:
    """Each venue's files with DuckDB, then one table in ts order."""
    by_venue: dict[str, list[Path]] = {}
    for f in sel.files:
        by_venue.setdefault(_venue_of(f), []).append(f)
    tables = [
        _query_venue(con, sel, fs, start_ns, end_ns, columns, newest_only)
        for fs in by_venue.values()
    ]
    if len(tables) == 1:
        return tables[0]
    table = pa.concat_tables(tables, promote_options="permissive")
    order = pa.compute.sort_indices(table, [("ts", "ascending")])
    return table.take(order)


def _corrupt_file(message: str, files: list[Path]) -> Path | None:
    for f in files:
        if str(f) in message:
            return f
    return None


def query_arrow(
    kind: str,
    symbol: str,
    start: Any = None,
    end: Any = None,
    *,
    venue: str | None = None,
    root: str | Path | None = None,
    columns: list[str] | None = None,
    interval: str | None = None,
    revisions: bool = True,
) -> tuple[pa.Table, Selection]:
    """The records of a symbol in [start, end) as an Arrow table, and the files read/skipped;
    columns: only these (and `ts`), in that order, plus symbol and venue; interval: a
    candle interval (candles only); revisions=False: each candle at its newest revision."""
    _check_kind(kind)
    root = Path(root or DEFAULT_DIR)
    start_ns = parse_time(start, "from") or 0
    end_ns = parse_time(end, "to", end=True)
    end_ns = 2**62 if end_ns is None else end_ns
    if start_ns >= end_ns:
        raise HistoryError(
            f"empty range: from {start} ({_iso(start_ns)}) is not before to {end} "
            f"({_iso(end_ns)}, a bare date meaning the end of that day)"
        )
    columns = _check_columns(kind, columns)
    kdir = kind_dir(kind, _check_interval(kind, interval, root))
    newest_only = kind == "candles" and not revisions
    sel = select(kdir, symbol, start_ns, end_ns, venue, root)
    con = duckdb.connect()
    try:
        for _ in range(_MAX_RETRIES):
            if not sel.files:
                return _empty(kind, columns), sel
            try:
                return _read(con, sel, start_ns, end_ns, columns, newest_only), sel
            except duckdb.Error as exc:
                bad = _corrupt_file(str(exc), sel.files)
                if bad is None:
                    raise HistoryError(f"query of {symbol} {_what(kdir)} failed: {exc}") from None
                if not bad.exists():  # compacted meanwhile: its rows are in the merged file now
                    skipped = sel.skipped
                    sel = select(kdir, symbol, start_ns, end_ns, venue, root)
                    sel.skipped |= skipped
                    continue
                sel.skipped[bad] = str(exc).splitlines()[0]
                sel.files.remove(bad)
        raise HistoryError(f"query of {symbol} {_what(kdir)}: too many unreadable files")
    finally:
        con.close()


def _check_columns(kind: str, columns: list[str] | None) -> list[str] | None:
    if columns is None:
        return None
    known = ["ts", *schema.COLUMNS[kind]]
    bad = [c for c in columns if c not in known]
    if bad or isinstance(columns, str):
        raise HistoryError(f"columns: {bad or columns!r} unknown; {kind} have {', '.join(known)}")
    return ["ts", *(c for c in columns if c != "ts")]


def _empty(kind: str, columns: list[str] | None) -> pa.Table:
    table = schema.empty_table(kind)
    if columns is not None:
        table = table.select(columns)
    table = table.append_column("symbol", pa.array([], pa.string()))
    return table.append_column("venue", pa.array([], pa.string()))


def _convert(table: pa.Table, as_: str) -> Any:
    if as_ == "arrow":
        return table
    if as_ == "pandas":
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise HistoryError(
                "as_='pandas' needs pandas installed (pip install pandas); "
                "as_='arrow' or as_='numpy' work without it"
            ) from None
        return table.to_pandas()
    return to_numpy(table)


def to_numpy(table: pa.Table) -> np.ndarray:
    """An Arrow table as a numpy structured array (book levels as (n, depth) sub-arrays)."""
    fields, arrays = [], []
    for name, col in zip(table.column_names, table.columns, strict=True):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
            width = col.type.list_size if pa.types.is_fixed_size_list(col.type) else None
            flat = col.flatten().to_numpy(zero_copy_only=False)
            width = width or (len(flat) // len(col) if len(col) else 0)
            arr = flat.reshape(len(col), width)
            fields.append((name, arr.dtype, (width,)))
        elif pa.types.is_timestamp(col.type):
            arr = col.cast(pa.int64()).to_numpy(zero_copy_only=False).astype("datetime64[ns]")
            fields.append((name, arr.dtype))
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            arr = np.array(col.to_pylist(), dtype=object)
            fields.append((name, object))
        else:
            arr = col.to_numpy(zero_copy_only=False)
            fields.append((name, arr.dtype))
        arrays.append(arr)
    out = np.empty(table.num_rows, dtype=fields)
    for (name, *_), arr in zip(fields, arrays, strict=True):
        out[name] = arr
    return out


def _query(kind: str, symbol: str, start: Any, end: Any, as_: str, **options: Any) -> Any:
    if as_ not in FORMATS:
        raise HistoryError(f"as_={as_!r}: use one of {', '.join(FORMATS)}")
    table, sel = query_arrow(kind, symbol, start, end, **options)
    for path, why in sel.skipped.items():
        warnings.warn(f"skipped {path}: not a readable Parquet file ({why})", HistoryWarning, 3)
    return _convert(table, as_)


def trades(
    symbol: str,
    start: Any = None,
    end: Any = None,
    *,
    venue: str | None = None,
    root: str | Path | None = None,
    as_: str = "arrow",
    columns: list[str] | None = None,
) -> Any:
    """Archived trades of symbol in [start, end), oldest first: Arrow, pandas or numpy
    (columns: only these, e.g. ["price", "qty", "side"]; `ts`, symbol and venue always)."""
    return _query("trades", symbol, start, end, as_, venue=venue, root=root, columns=columns)


def books(
    symbol: str,
    start: Any = None,
    end: Any = None,
    *,
    venue: str | None = None,
    root: str | Path | None = None,
    as_: str = "arrow",
    columns: list[str] | None = None,
) -> Any:
    """Archived book records of symbol in [start, end), oldest first: Arrow, pandas or numpy."""
    return _query("books", symbol, start, end, as_, venue=venue, root=root, columns=columns)


def tickers(
    symbol: str,
    start: Any = None,
    end: Any = None,
    *,
    venue: str | None = None,
    root: str | Path | None = None,
    as_: str = "arrow",
    columns: list[str] | None = None,
) -> Any:
    """Archived ticker records of symbol in [start, end), oldest first (mark and index price,
    funding, open interest, 24 h figures; NaN where the venue never sent a field)."""
    return _query("tickers", symbol, start, end, as_, venue=venue, root=root, columns=columns)


def candles(
    symbol: str,
    start: Any = None,
    end: Any = None,
    *,
    interval: str = "1m",
    venue: str | None = None,
    root: str | Path | None = None,
    as_: str = "arrow",
    columns: list[str] | None = None,
    revisions: bool = False,
) -> Any:
    """Archived candles of symbol at interval whose interval starts in [start, end), oldest
    first: each at its newest revision, or every record the ring carried (revisions=True)."""
    return _query(
        "candles",
        symbol,
        start,
        end,
        as_,
        venue=venue,
        root=root,
        columns=columns,
        interval=interval,
        revisions=revisions,
    )
