"""Archived records back into rings: a replay instance the same `attach()` code reads.

Records keep their exchange and receive times, carry FLAG_REPLAYED in their flags, and are
written in exchange-time order across symbols and kinds, one ring per kind and venue
(`books.<venue>`, `trades.<venue>`, `tickers.<venue>`, `candles_<interval>.<venue>`), at the
original pace times `speed` or as fast as the rings take them (`speed=None`). A candle is
written when it became known live, never before the trades in it: at its interval's end, or
at the receive time of the late trade that amended it (every revision, as the ring carried
them), so a strategy on history sees no candle ahead of its time. Ring records are built column by column with numpy and
copied into the writer's staging record as bytes, so the per-record cost is one copy and one
commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mdpipe.history import schema
from mdpipe.history.query import HistoryError, query_arrow, symbols
from mdpipe.history.store import kind_dirs, safe_part
from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter

log = logging.getLogger("mdpipe.replay")

MAX_DEFAULT_CAPACITY = 1 << 18
HEARTBEAT_EVERY = 0.5  # seconds, while waiting for the next record's time


@dataclass
class _Stream:
    """One ring's records, in its dtype, ready to commit in order."""

    writer: RingWriter
    records: np.ndarray  # ring dtype, oldest first
    ts: np.ndarray
    symbol_ids: list[int]


def _column(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return col.to_numpy()


def _levels(table: pa.Table, name: str, depth: int) -> np.ndarray:
    col = table.column(name).combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(col), -1)[:, :depth] if len(col) else np.zeros((0, depth))


RING_KIND = {"books": "book", "trades": "trade", "tickers": "ticker", "candles": "candle"}


def ring_records(kind: str, table: pa.Table, dtype: np.dtype, sids: np.ndarray) -> np.ndarray:
    """An archived table as ring records of dtype, flagged REPLAYED (seq, commit time and
    symbol_seq are the replay writer's, set at commit)."""
    kind = schema.base_kind(kind)
    out = np.zeros(table.num_rows, dtype)
    out["symbol_id"] = sids
    for name in schema.COLUMNS[kind]:
        if name not in ("symbol_seq", "commit_ts_ns", *schema.LEVEL_COLUMNS):
            out[name] = _column(table, name)
    out["flags"] |= L.FLAG_REPLAYED
    if kind == "books":
        depth = dtype["bids"].shape[0]
        for side in ("bid", "ask"):
            arr = out[f"{side}s"]
            arr[:, :, 0] = _levels(table, f"{side}_price", depth)
            arr[:, :, 1] = _levels(table, f"{side}_qty", depth)
    return out


def replay_ts(kind: str, table: pa.Table) -> np.ndarray:
    """When each record is written: its `ts`; a candle at its interval's end, or later at
    the receive time of the trade that last changed it (an amendment)."""
    if schema.base_kind(kind) != "candles":
        return _column(table, "ts")
    close = _column(table, "open_ts_ns") + _column(table, "interval_ns")
    return np.maximum(close, _column(table, "recv_ts_ns"))


def _query_kinds(root: str | Path) -> list[tuple[str, str, str | None]]:
    """(kind, directory, candle interval) of every kind archived under root."""
    out = []
    for d in kind_dirs(Path(root)):
        if d.startswith("candles_"):
            out.append(("candles", d, d[len("candles_") :]))
        else:
            out.append((d, d, None))
    return out


def load(
    start: Any,
    end: Any,
    *,
    root: str | Path,
    symbol_list: list[str] | None = None,
    venue: str | None = None,
) -> dict[tuple[str, str], list[pa.Table]]:
    """(kind directory, venue) -> the archived tables of every selected symbol in [start, end)
    (every kind: books, trades, tickers, each candle interval with every revision)."""
    found: dict[tuple[str, str], list[pa.Table]] = {}
    kinds = _query_kinds(root)
    for kind, kdir, interval in kinds:
        wanted = symbol_list or sorted(symbols(kind, root, interval=interval))
        for sym in wanted:
            try:
                table, sel = query_arrow(
                    kind, sym, start, end, venue=venue, root=root, interval=interval
                )
            except HistoryError:
                if symbol_list and not any(
                    sym in symbols(k, root, interval=i) for k, _, i in kinds
                ):
                    raise
                continue  # archived as another kind only
            for path, why in sel.skipped.items():
                log.warning("skipped %s: not a readable Parquet file (%s)", path, why)
            if not table.num_rows:
                continue
            venues = table.column("venue").cast(pa.string())
            for v in pa.compute.unique(venues).to_pylist():
                part = table.filter(pa.compute.equal(venues, v))
                found.setdefault((kdir, v), []).append(part)
    return found


def _capacity(n: int, given: int | None) -> int:
    if given:
        return given
    cap = 1024
    while cap < n and cap < MAX_DEFAULT_CAPACITY:
        cap <<= 1
    return cap


def build_streams(
    instance: str, found: dict[tuple[str, str], list[pa.Table]], capacity: int | None
) -> list[_Stream]:
    """One writer per (kind, venue) with its symbols, and its records in ring layout."""
    streams = []
    for (kind, venue), tables in sorted(found.items()):
        table = pa.concat_tables(tables)
        names = table.column("symbol").to_pylist()
        syms = sorted(set(names))
        depth = len(table.column("bid_price")[0]) if kind == "books" else 0
        writer = RingWriter.create(
            instance,
            f"{kind}.{safe_part(venue).replace(':', '_')}",
            RING_KIND[schema.base_kind(kind)],
            symbols=syms,
            capacity=_capacity(table.num_rows, capacity),
            depth=depth or 1,
            max_symbols=max(256, len(syms)),
            exchange=venue,
        )
        ids = writer.symbols
        sids = np.array([ids[s] for s in names], np.uint32)
        recs = ring_records(kind, table, writer.dtype, sids)
        ts = replay_ts(kind, table)
        order = np.argsort(ts, kind="stable")
        streams.append(_Stream(writer, recs[order], ts[order], sids[order].tolist()))
    return streams


def run(
    streams: list[_Stream],
    speed: float | None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Commit every stream's records in time order; returns records written."""
    if not streams:
        return 0
    ts_all = np.concatenate([s.ts for s in streams])
    which = np.concatenate([np.full(len(s.ts), i, np.int32) for i, s in enumerate(streams)])
    rows = np.concatenate([np.arange(len(s.ts)) for s in streams])
    order = np.argsort(ts_all, kind="stable")
    which_l, rows_l, ts_l = which[order].tolist(), rows[order].tolist(), ts_all[order].tolist()
    mem = [memoryview(s.records.view(np.uint8)).cast("B") for s in streams]
    size = [s.records.dtype.itemsize for s in streams]
    staging = [memoryview(s.writer.staging.view(np.uint8)).cast("B") for s in streams]
    commit = [s.writer.commit for s in streams]
    sids = [s.symbol_ids for s in streams]
    if speed is None:
        return _run_max(which_l, rows_l, staging, mem, size, commit, sids, stop, progress)
    t0_data = ts_l[0] if ts_l else 0
    t0_wall = time.monotonic_ns()
    next_heartbeat = 0.0
    n = 0
    for k, (w, r) in enumerate(zip(which_l, rows_l, strict=True)):
        due = t0_wall + (ts_l[k] - t0_data) / speed
        while True:
            ahead = due - time.monotonic_ns()
            if ahead <= 0:
                break
            if stop is not None and stop.is_set():
                return n
            time.sleep(min(ahead / 1e9, HEARTBEAT_EVERY))
            if time.monotonic() >= next_heartbeat:
                next_heartbeat = time.monotonic() + HEARTBEAT_EVERY
                for s in streams:
                    s.writer.heartbeat()
        if stop is not None and stop.is_set():
            return n
        sz = size[w]
        staging[w][:] = mem[w][r * sz : (r + 1) * sz]
        commit[w](sids[w][r])
        n += 1
        if progress is not None and not n & 0xFFFF:
            progress(n)
    return n


def _run_max(
    which: list[int],
    rows: list[int],
    staging: list[memoryview],
    mem: list[memoryview],
    size: list[int],
    commit: list[Callable[[int], int]],
    sids: list[list[int]],
    stop: threading.Event | None,
    progress: Callable[[int], None] | None,
) -> int:
    """The --max loop: one byte copy and one commit per record, checked for stop every 64 K."""
    n = 0
    chunk = 1 << 16
    for a in range(0, len(which), chunk):
        if stop is not None and stop.is_set():
            break
        for w, r in zip(which[a : a + chunk], rows[a : a + chunk], strict=True):
            sz = size[w]
            staging[w][:] = mem[w][r * sz : r * sz + sz]
            commit[w](sids[w][r])
        n = min(len(which), a + chunk)
        if progress is not None:
            progress(n)
    return n
