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
    from publisher.rolling over the trades seen, volume in the base asset.

funding:{SYMBOL}    {"symbol", "exchange", "mark_price", "index_price", "funding_rate",
                     "next_funding_ts", "open_interest", "last_price", "bid_price", "bid_qty",
                     "ask_price", "ask_qty", "open_24h", "high_24h", "low_24h", "volume_24h",
                     "quote_volume_24h", "exchange_ts", "timestamp"}
    the venue's newest ticker state; a field the venue does not send is null.
candles:{SYMBOL}:{INTERVAL} {"symbol", "exchange", "interval", "open_ts", "open", "high",
                     "low", "close", "volume", "quote_volume", "taker_buy_volume", "trades",
                     "first_trade_id", "last_trade_id", "revision", "amended", "restart",
                     "final", "timestamp"}
    one message per closed candle (again, revision + 1, when a late trade amends it).

Names are templates filled by mdpipe.redis_names (a venue segment, cluster hash tags). With
Streams on, trades_stream:{SYMBOL} and orderbook_stream:{SYMBOL} entries hold the same JSON in
field d and the entry's number in its stream in field n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import orjson

from mdpipe.publisher.rolling import Rolling24h, Window
from mdpipe.redis_names import SymbolNames
from mdpipe.shm import layout as L

try:  # the C payload printer; without it, orjson prints every level
    from mdpipe.publisher._json import books as _c_books
except ImportError:  # built without a compiler (setup.py: optional)
    _c_books = None

_dumps = orjson.dumps
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_NO_TRADES = Window(0.0, None, None, 0)


class Sink(Protocol):
    """What encoding needs of publisher.sink.RedisSink."""

    def publish(self, slot: int, prefix: bytes, payload: bytes) -> None: ...
    def publish_many(self, targets: list[tuple[int, bytes]], payloads: list[bytes]) -> None: ...
    def set_many(self, items: list[tuple[int, bytes, bytes]]) -> None: ...
    def push(self) -> None: ...
    def set(self, slot: int, prefix: bytes, value: bytes) -> None: ...
    def xadd(self, slot: int, prefix: bytes, payload: bytes, n: int) -> None: ...


@dataclass(eq=False, slots=True)
class SymbolState:
    """What the publisher knows of one (exchange, symbol): channel names and newest state."""

    symbol: str
    exchange: str
    names: SymbolNames | None = None  # filled in by the publisher (cluster or not)
    slot: int = 0  # the hash slot of every name of the symbol (0 outside a cluster)
    # The Redis commands up to the payload (publisher.sink.publish_prefix / set_prefix / ...).
    book_pub: bytes = b""
    book_set: bytes = b""
    trade_pub: bytes = b""
    trade_set: bytes = b""
    md_pub: bytes = b""
    md_set: bytes = b""
    books_xadd: bytes = b""
    trades_xadd: bytes = b""
    books_n: int = 0  # number of the newest entry of the books stream
    trades_n: int = 0  # number of the newest entry of the trades stream
    stream_book_sent: float = 0.0  # time.monotonic() of the last book added to the stream
    stream_book_stale: bool = False  # the books stream is older than `book`
    book: bytes | None = None  # newest book payload (also the orderbook key's value)
    book_head: bytes = b""  # its payload's start (book_head()), built on first use
    trade: bytes | None = None  # newest trade payload (the trades key's value)
    bid: float | None = None
    ask: float | None = None
    last_price: float | None = None
    stats: Rolling24h | None = None  # created with the first trade (books-only symbols need none)
    md_sent: float = 0.0  # time.monotonic() of the last market_data publication
    funding_pub: bytes = b""
    funding_set: bytes = b""
    candle_cmds: dict[str, tuple[bytes, bytes]] | None = None  # interval -> (publish, set)


def newest_per_symbol(sids: np.ndarray) -> np.ndarray:
    """Indices of the last record of each symbol, in ring order (conflation)."""
    rev = sids[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    idx = len(sids) - 1 - first_in_rev
    idx.sort()
    return idx


BOOK_CHUNK = 128  # books encoded and sent at a time: Redis takes one while the next is encoded


def books(
    recs: np.ndarray, table: list[SymbolState], levels: int, sink: Sink | None
) -> set[SymbolState]:
    """Encode book records, publish each (unless sink is None), keep the newest per symbol.

    The records go out BOOK_CHUNK at a time (sink.push: sent, replies read by the round trip's
    send). Each symbol's key is SET to its newest book of the chunk before the chunk's first
    PUBLISH of it: the key is never behind the channel, so a subscriber that subscribes, then
    GETs the key, receives every later book on the channel (see DOCUMENTED_PROCEDURE in the
    consumer). Returns the symbols touched.
    """
    touched: set[SymbolState] = set()
    for start in range(0, len(recs), BOOK_CHUNK):
        part = recs[start : start + BOOK_CHUNK]
        payloads = book_payloads(part, table, levels)
        sids = part["symbol_id"].tolist()
        newest = _newest_books(part, sids, table, levels, payloads)
        touched.update(newest)
        if sink is not None:
            sink.set_many([(st.slot, st.book_set, st.book) for st in newest])
            targets = [(st.slot, st.book_pub) for st in map(table.__getitem__, sids)]
            sink.publish_many(targets, payloads)
            sink.push()
    return touched


def _newest_books(
    recs: np.ndarray,
    sids: list[int],
    table: list[SymbolState],
    levels: int,
    payloads: list[bytes],
) -> list[SymbolState]:
    """Keep each symbol's newest book (payload, best bid and ask); returns the symbols."""
    newest = dict(zip(sids, range(len(sids)), strict=True))  # symbol id -> its last record
    last = np.fromiter(newest.values(), np.intp, len(newest))
    exact = (recs["flags"][last] & L.FLAG_SYNCED != 0) & (recs["bid_count"][last] > 0)
    exact &= (recs["ask_count"][last] > 0) & (min(levels, recs.dtype["bids"].shape[0]) > 0)
    states = []
    for sid, i, ok, bid, ask in zip(
        newest,
        newest.values(),
        exact.tolist(),
        recs["bids"][last, 0, 0].tolist(),
        recs["asks"][last, 0, 0].tolist(),
        strict=True,
    ):
        st = table[sid]
        st.book = payloads[i]
        if ok:
            st.bid, st.ask = bid, ask
        else:
            st.bid = st.ask = None
        st.stream_book_stale = True
        states.append(st)
    return states


def book_head(st: SymbolState) -> bytes:
    """A symbol's book payload up to its bids: `{"symbol":..,"exchange":..,"bids":`."""
    return b'{"symbol":%b,"exchange":%b,"bids":' % (_dumps(st.symbol), _dumps(st.exchange))


def book_payloads(recs: np.ndarray, table: list[SymbolState], levels: int) -> list[bytes]:
    """The orderbook JSON of each record, at most `levels` levels per side.

    The C printer writes decimal prices and sizes (what venues send) at a fraction of orjson's
    cost; a record holding another number, or every record when the printer was not built,
    is printed by orjson from the dict of the format.
    """
    n = len(recs)
    lv = min(levels, recs.dtype["bids"].shape[0])
    if _c_books is None or not n:
        return [_book_payload(recs[i], table, lv) for i in range(n)]
    heads = []
    for st in map(table.__getitem__, recs["symbol_id"].tolist()):
        head = st.book_head
        if not head:
            head = st.book_head = book_head(st)
        heads.append(head)
    payloads = _c_books(
        heads,
        np.ascontiguousarray(recs["bids"][:, :lv]),
        np.ascontiguousarray(recs["asks"][:, :lv]),
        np.minimum(recs["bid_count"], lv).tolist(),
        np.minimum(recs["ask_count"], lv).tolist(),
        recs["first_update_id"].tolist(),
        recs["last_update_id"].tolist(),
        recs["symbol_seq"].tolist(),
        (recs["flags"] & L.FLAG_SYNCED != 0).tolist(),
        recs["exchange_ts_ns"].tolist(),
        recs["commit_ts_ns"].tolist(),
    )
    for i, payload in enumerate(payloads):
        if payload is None:
            payloads[i] = _book_payload(recs[i], table, lv)
    return payloads


def _book_payload(rec: np.void, table: list[SymbolState], lv: int) -> bytes:
    """One record's orderbook JSON through the dict of the format (any level counts)."""
    st = table[int(rec["symbol_id"])]
    return _dumps(
        {
            "symbol": st.symbol,
            "exchange": st.exchange,
            "bids": rec["bids"][: min(int(rec["bid_count"]), lv)],
            "asks": rec["asks"][: min(int(rec["ask_count"]), lv)],
            "first_update_id": int(rec["first_update_id"]),
            "last_update_id": int(rec["last_update_id"]),
            "seq": int(rec["symbol_seq"]),
            "synced": bool(int(rec["flags"]) & L.FLAG_SYNCED),
            "exchange_ts": int(rec["exchange_ts_ns"]),
            "timestamp": int(rec["commit_ts_ns"]),
        },
        option=_NUMPY,
    )


def count_trades(recs: np.ndarray, table: list[SymbolState], now_ns: int) -> None:
    """Add trade records to their symbols' rolling 24 h figures."""
    sid_col = recs["symbol_id"]
    ts_col = recs["exchange_ts_ns"]
    px_col = recs["price"]
    qty_col = recs["qty"]
    lo, hi = int(sid_col.min()), int(sid_col.max())
    groups = [lo] if lo == hi else np.unique(sid_col).tolist()
    for sid in groups:
        st = table[sid]
        if st.stats is None:
            st.stats = Rolling24h()
        if lo == hi:
            st.stats.add(ts_col, px_col, qty_col, now_ns)
        else:
            sel = sid_col == sid
            st.stats.add(ts_col[sel], px_col[sel], qty_col[sel], now_ns)


def trades(
    recs: np.ndarray, table: list[SymbolState], sink: Sink, streams: bool
) -> set[SymbolState]:
    """Encode and publish trade records (all of them, in order), and XADD them when streams.

    Each symbol's trades key is SET to its newest trade first, as for books.

    Returns the symbols touched.
    """
    sids = recs["symbol_id"].tolist()
    tids = recs["trade_id"].tolist()
    pxs = recs["price"].tolist()
    qtys = recs["qty"].tolist()
    sides = recs["side"].tolist()
    flags = recs["flags"].tolist()
    ets = recs["exchange_ts_ns"].tolist()
    cts = recs["commit_ts_ns"].tolist()
    touched = set()
    payloads = []
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
        payloads.append(payload)
        st.trade = payload
        st.last_price = pxs[i]
        touched.add(st)
    for st in touched:  # the key first, as for books
        sink.set(st.slot, st.trade_set, st.trade)
    publish = sink.publish
    for i, sid in enumerate(sids):
        st = table[sid]
        publish(st.slot, st.trade_pub, payloads[i])
        if streams:
            st.trades_n += 1
            sink.xadd(st.slot, st.trades_xadd, payloads[i], st.trades_n)
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


_TICKER_NAMES = [n for n, _, _ in L.TICKER_VALUES if n != "next_funding_ts_ns"]


def tickers(recs: np.ndarray, table: list[SymbolState], sink: Sink) -> int:
    """Publish (and SET) each symbol's newest ticker of the batch on funding:; returns how many."""
    sent = 0
    for i in newest_per_symbol(recs["symbol_id"]).tolist():
        rec = recs[i]
        st = table[int(rec["symbol_id"])]
        filled = int(rec["filled"])
        body: dict[str, object] = {"symbol": st.symbol, "exchange": st.exchange}
        for name in _TICKER_NAMES:
            body[name] = float(rec[name]) if filled & L.TICKER_BITS[name] else None
        has_next = filled & L.TICKER_BITS["next_funding_ts_ns"]
        body["next_funding_ts"] = int(rec["next_funding_ts_ns"]) if has_next else None
        body["exchange_ts"] = int(rec["exchange_ts_ns"])
        body["timestamp"] = int(rec["commit_ts_ns"])
        payload = _dumps(body)
        sink.set(st.slot, st.funding_set, payload)
        sink.publish(st.slot, st.funding_pub, payload)
        sent += 1
    return sent


def candles(recs: np.ndarray, table: list[SymbolState], sink: Sink, interval: str) -> None:
    """Publish every candle record (in order) on candles:<symbol>:<interval>, SET the newest."""
    newest: dict[SymbolState, bytes] = {}
    out = []
    for rec in recs:
        st = table[int(rec["symbol_id"])]
        flags = int(rec["flags"])
        payload = _dumps(
            {
                "symbol": st.symbol,
                "exchange": st.exchange,
                "interval": interval,
                "open_ts": int(rec["open_ts_ns"]),
                "open": float(rec["open"]),
                "high": float(rec["high"]),
                "low": float(rec["low"]),
                "close": float(rec["close"]),
                "volume": float(rec["volume"]),
                "quote_volume": float(rec["quote_volume"]),
                "taker_buy_volume": float(rec["taker_buy_volume"]),
                "trades": int(rec["trades"]),
                "first_trade_id": int(rec["first_trade_id"]),
                "last_trade_id": int(rec["last_trade_id"]),
                "revision": int(rec["revision"]),
                "amended": bool(flags & L.FLAG_CANDLE_AMENDED),
                "restart": bool(flags & L.FLAG_CANDLE_RESTART),
                "final": not flags & L.FLAG_CANDLE_OPEN,
                "timestamp": int(rec["commit_ts_ns"]),
            }
        )
        out.append((st, payload))
        newest[st] = payload
    for st, payload in newest.items():
        sink.set(st.slot, st.candle_cmds[interval][1], payload)
    for st, payload in out:
        sink.publish(st.slot, st.candle_cmds[interval][0], payload)
