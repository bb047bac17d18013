"""The columns of archived trades, books, tickers and candles, and ring records as Arrow tables.

`ts` is the exchange time (the receive time when the venue gave none; a candle's interval
start), a UTC timestamp with nanoseconds; the other times stay integers in ns since the
epoch, as in the rings. Book levels are fixed-size lists of `depth` prices and quantities per
side, best first (0 past the count). Tickers and candles keep every field of their ring
record (a ticker field the venue never sent stays NaN, its bit clear in `filled`). Venue,
symbol and date are the Parquet partition (directory) names, not columns of the files.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mdpipe.shm import layout as L

TS = pa.timestamp("ns", tz="UTC")

TRADE_COLUMNS = (
    "exchange_ts_ns",
    "event_ts_ns",
    "recv_ts_ns",
    "commit_ts_ns",
    "trade_id",
    "first_trade_id",
    "last_trade_id",
    "price",
    "qty",
    "side",
    "flags",
    "symbol_seq",
)
BOOK_COLUMNS = (
    "exchange_ts_ns",
    "recv_ts_ns",
    "commit_ts_ns",
    "first_update_id",
    "last_update_id",
    "prev_update_id",
    "symbol_seq",
    "flags",
    "bid_count",
    "ask_count",
)
LEVEL_COLUMNS = ("bid_price", "bid_qty", "ask_price", "ask_qty")
_RING_ONLY = ("seq", "symbol_id", "_pad0")  # the ring's own words, not market data
TICKER_COLUMNS = tuple(n for n, _, _ in L.TICKER_FIELDS if n not in _RING_ONLY)
CANDLE_COLUMNS = tuple(n for n, _, _ in L.CANDLE_FIELDS if n not in _RING_ONLY)
COLUMNS = {
    "trades": TRADE_COLUMNS,
    "books": BOOK_COLUMNS + LEVEL_COLUMNS,
    "tickers": TICKER_COLUMNS,
    "candles": CANDLE_COLUMNS,
}


def base_kind(kind: str) -> str:
    """The record kind of a kind directory (candles_1m -> candles)."""
    return "candles" if kind.startswith("candles") else kind


def event_ts(recs: np.ndarray) -> np.ndarray:
    """The exchange time of each record, its receive time where the exchange time is 0."""
    ts = recs["exchange_ts_ns"]
    return np.where(ts > 0, ts, recs["recv_ts_ns"]).astype(np.int64)


def record_ts(kind: str, recs: np.ndarray) -> np.ndarray:
    """The `ts` of each record: a candle's interval start, else its event time."""
    if base_kind(kind) == "candles":
        return recs["open_ts_ns"].astype(np.int64)
    return event_ts(recs)


def _fixed_list(values: np.ndarray, depth: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), pa.float64())
    return pa.FixedSizeListArray.from_arrays(flat, depth)


def trades_table(recs: np.ndarray) -> pa.Table:
    """Trade ring records as an Arrow table (column `ts` first)."""
    cols = {"ts": pa.array(event_ts(recs), pa.int64()).cast(TS)}
    for name in TRADE_COLUMNS:
        cols[name] = pa.array(np.ascontiguousarray(recs[name]))
    return pa.table(cols)


def books_table(recs: np.ndarray, depth: int) -> pa.Table:
    """Book ring records as an Arrow table with `depth` levels per side."""
    cols = {"ts": pa.array(event_ts(recs), pa.int64()).cast(TS)}
    for name in BOOK_COLUMNS:
        cols[name] = pa.array(np.ascontiguousarray(recs[name]))
    bids, asks = recs["bids"][:, :depth], recs["asks"][:, :depth]
    cols["bid_price"] = _fixed_list(bids[:, :, 0], depth)
    cols["bid_qty"] = _fixed_list(bids[:, :, 1], depth)
    cols["ask_price"] = _fixed_list(asks[:, :, 0], depth)
    cols["ask_qty"] = _fixed_list(asks[:, :, 1], depth)
    return pa.table(cols)


def _plain_table(kind: str, recs: np.ndarray) -> pa.Table:
    cols = {"ts": pa.array(record_ts(kind, recs), pa.int64()).cast(TS)}
    for name in COLUMNS[kind]:
        cols[name] = pa.array(np.ascontiguousarray(recs[name]))
    return pa.table(cols)


def tickers_table(recs: np.ndarray) -> pa.Table:
    """Ticker ring records as an Arrow table (column `ts` first, then every record field)."""
    return _plain_table("tickers", recs)


def candles_table(recs: np.ndarray) -> pa.Table:
    """Candle ring records as an Arrow table (`ts` is the interval start)."""
    return _plain_table("candles", recs)


def table_of(kind: str, recs: np.ndarray, depth: int) -> pa.Table:
    """Records of a kind (directory name, e.g. candles_1m) as the Arrow table archived."""
    kind = base_kind(kind)
    if kind == "trades":
        return trades_table(recs)
    if kind == "books":
        return books_table(recs, depth)
    return tickers_table(recs) if kind == "tickers" else candles_table(recs)


def empty_table(kind: str, depth: int = 1) -> pa.Table:
    """A table of no rows with the archived columns of a kind."""
    dtype = {
        "trades": L.TRADE_DTYPE,
        "books": L.book_dtype(max(depth, 1)),
        "tickers": L.TICKER_DTYPE,
        "candles": L.CANDLE_DTYPE,
    }[base_kind(kind)]
    return table_of(kind, np.zeros(0, dtype), max(depth, 1))
