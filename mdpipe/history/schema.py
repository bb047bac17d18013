"""The columns of archived trades and books, and ring records turned into Arrow tables.

`ts` is the exchange time (the receive time when the venue gave none), a UTC timestamp with
nanoseconds; the other times stay integers in ns since the epoch, as in the rings. Book levels
are fixed-size lists of `depth` prices and quantities per side, best first (0 past the count).
Venue, symbol and date are the Parquet partition (directory) names, not columns of the files.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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


def event_ts(recs: np.ndarray) -> np.ndarray:
    """The exchange time of each record, its receive time where the exchange time is 0."""
    ts = recs["exchange_ts_ns"]
    return np.where(ts > 0, ts, recs["recv_ts_ns"]).astype(np.int64)


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
