"""The JSON the publisher sends to Redis, built from batches of ring records.

Formats (all times are integer nanoseconds since the Unix epoch, as in the ring; prices and
quantities are JSON numbers holding exactly the float64 from the ring, printed by orjson as
the shortest text that reads back to the same float):

orderbook:{SYMBOL}  {"symbol", "exchange", "bids": [[price, qty], ...], "asks": [...],
                     "first_update_id", "last_update_id", "seq", "synced",
                     "exchange_ts", "timestamp"}
    best level first; at most `levels` levels and only the levels the record counts.
    exchange is the ring's venue and market, e.g. "binance-futures". seq is the record's
    per-symbol sequence (1, 2, 3, ... per writer generation): a jump means books were
    skipped (conflated, lost to lapping, or dropped while Redis was down), a drop means the
    writer restarted, the same seq again is the newest book re-sent after a Redis outage.
    synced false: the book is being (re)built and is not exact. exchange_ts is the
    exchange's event time, timestamp when the record entered the ring.
trades:{SYMBOL}     {"symbol", "exchange", "trade_id", "price", "quantity", "side",
                     "is_buyer_maker", "exchange_ts", "timestamp"}
    side is the aggressor's, "buy" or "sell"; exchange_ts is the trade time.
market_data:{SYMBOL} {"symbol", "last_price", "bid_price", "ask_price", "mid_price",
                     "spread_bps", "volume_24h", "high_24h", "low_24h", "trades_24h",
                     "updated_at"}
    bid/ask from the newest synced book (null while the book is not exact), 24 h figures
    from publisher_rolling over the trades seen, volume in the base asset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

from mdpipe.publisher_rolling import Rolling24h, Window
from mdpipe.shm import layout as L

_dumps = orjson.dumps
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_NO_TRADES = Window(0.0, None, None, 0)
Publish = Callable[[bytes, bytes], object]


@dataclass(eq=False, slots=True)
class SymbolState:
    """What the publisher knows of one (exchange, symbol): channel names and newest state."""

    symbol: str
    exchange: str
    # The Redis commands up to the payload (publisher_redis.publish_prefix / set_prefix).
    book_pub: bytes
    book_set: bytes
    trade_pub: bytes
    trade_set: bytes
    md_pub: bytes
    md_set: bytes
    book: bytes | None = None  # newest book payload (also the orderbook key's value)
    trade: bytes | None = None  # newest trade payload (the trades key's value)
    bid: float | None = None
    ask: float | None = None
    last_price: float | None = None
    stats: Rolling24h | None = None  # created with the first trade (books-only symbols need none)
    book_stale: bool = False  # the orderbook key is older than `book`
    trade_stale: bool = False  # the trades key is older than `trade`
    keys_sent: float = 0.0  # time.monotonic() of the last key update
    md_sent: float = 0.0  # time.monotonic() of the last market_data publication


def channel_names(templates: tuple[str, str, str], symbol: str, exchange: str) -> list[bytes]:
    """Book, trade and market_data channels: templates filled with symbol, exchange and market."""
    venue, _, market = exchange.partition("-")  # the ring header says e.g. "binance-futures"
    return [t.format(symbol=symbol, exchange=venue, market=market).encode() for t in templates]


def newest_per_symbol(sids: np.ndarray) -> np.ndarray:
    """Indices of the last record of each symbol, in ring order (conflation)."""
    rev = sids[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    idx = len(sids) - 1 - first_in_rev
    idx.sort()
    return idx


def books(
    recs: np.ndarray, table: list[SymbolState], levels: int, publish: Publish | None
) -> set[SymbolState]:
    """Encode book records, publish each (unless publish is None), keep the newest per symbol.

    Returns the symbols touched.
    """
    lv = min(levels, recs.dtype["bids"].shape[0])
    sids = recs["symbol_id"].tolist()
    flags = recs["flags"].tolist()
    bcs = np.minimum(recs["bid_count"], lv).tolist()
    acs = np.minimum(recs["ask_count"], lv).tolist()
    # Each record's levels are one contiguous (n, 2) block that orjson prints straight from
    # the array, exactly as it prints the same floats from a list, at a third of the cost.
    bids = recs["bids"]
    asks = recs["asks"]
    fus = recs["first_update_id"].tolist()
    lus = recs["last_update_id"].tolist()
    seqs = recs["symbol_seq"].tolist()
    ets = recs["exchange_ts_ns"].tolist()
    cts = recs["commit_ts_ns"].tolist()
    touched = set()
    for i, sid in enumerate(sids):
        st = table[sid]
        nb = bcs[i]
        na = acs[i]
        b = bids[i, :nb]
        a = asks[i, :na]
        synced = bool(flags[i] & L.FLAG_SYNCED)
        payload = _dumps(
            {
                "symbol": st.symbol,
                "exchange": st.exchange,
                "bids": b,
                "asks": a,
                "first_update_id": fus[i],
                "last_update_id": lus[i],
                "seq": seqs[i],
                "synced": synced,
                "exchange_ts": ets[i],
                "timestamp": cts[i],
            },
            option=_NUMPY,
        )
        if publish is not None:
            publish(st.book_pub, payload)
        st.book = payload
        st.book_stale = True
        if synced and nb and na:
            st.bid, st.ask = float(b[0, 0]), float(a[0, 0])
        else:
            st.bid = st.ask = None
        touched.add(st)
    return touched


def trades(
    recs: np.ndarray, table: list[SymbolState], publish: Publish | None, now_ns: int
) -> set[SymbolState]:
    """Encode and publish trade records (all of them, in order) and count them in the 24 h stats.

    With publish None only the statistics and newest state are kept (Redis is down).
    Returns the symbols touched.
    """
    sid_col = recs["symbol_id"]
    ts_col = recs["exchange_ts_ns"]
    px_col = recs["price"]
    qty_col = recs["qty"]
    lo, hi = int(sid_col.min()), int(sid_col.max())
    groups = [lo] if lo == hi else np.unique(sid_col).tolist()
    touched = set()
    for sid in groups:
        st = table[sid]
        if st.stats is None:
            st.stats = Rolling24h()
        if lo == hi:
            st.stats.add(ts_col, px_col, qty_col, now_ns)
        else:
            sel = sid_col == sid
            st.stats.add(ts_col[sel], px_col[sel], qty_col[sel], now_ns)
        touched.add(st)
    if publish is None:
        last = newest_per_symbol(sid_col)
        recs = recs[last]
    sids = recs["symbol_id"].tolist()
    tids = recs["trade_id"].tolist()
    pxs = recs["price"].tolist()
    qtys = recs["qty"].tolist()
    sides = recs["side"].tolist()
    flags = recs["flags"].tolist()
    ets = recs["exchange_ts_ns"].tolist()
    cts = recs["commit_ts_ns"].tolist()
    for i, sid in enumerate(sids):
        st = table[sid]
        payload = _dumps(
            {
                "symbol": st.symbol,
                "exchange": st.exchange,
                "trade_id": tids[i],
                "price": pxs[i],
                "quantity": qtys[i],
                "side": "buy" if sides[i] > 0 else "sell",
                "is_buyer_maker": bool(flags[i] & L.FLAG_BUYER_MAKER),
                "exchange_ts": ets[i],
                "timestamp": cts[i],
            }
        )
        if publish is not None:
            publish(st.trade_pub, payload)
        st.trade = payload
        st.trade_stale = True
        st.last_price = pxs[i]
    return touched


def market_data(st: SymbolState, now_ns: int) -> bytes:
    """The market_data payload of a symbol at clock now_ns."""
    bid, ask = st.bid, st.ask
    mid = spread = None
    if bid is not None and ask is not None:
        mid = (bid + ask) / 2
        spread = (ask - bid) / mid * 10_000 if mid else None
    w = st.stats.snapshot(now_ns) if st.stats is not None else _NO_TRADES
    return _dumps(
        {
            "symbol": st.symbol,
            "last_price": st.last_price,
            "bid_price": bid,
            "ask_price": ask,
            "mid_price": mid,
            "spread_bps": spread,
            "volume_24h": w.volume,
            "high_24h": w.high,
            "low_24h": w.low,
            "trades_24h": w.trades,
            "updated_at": now_ns,
        }
    )
