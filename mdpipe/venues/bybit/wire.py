"""Bybit v5 public WebSocket (USDT linear perpetuals and spot): topics and a strict parser.

Readings of the documentation this module makes (docs checked Jul 2026):
- Book ids. `u` is the update id of one topic, +1 per push; `seq` is the cross sequence,
  comparable across depths and with trades, growing but not contiguous. A book record
  carries `first_update_id = u` and `last_update_id = seq`, so records line up with
  `orderbook.1` (matched by `seq`) and with trades (which carry `seq` too).
- Times. `event_time` is `ts` (when the market-data service built the message);
  `transaction_time` is `cts` (the matching engine's), 0 where absent.
- Trade ids. `i` is a UUID-like string on linear and not an integer anyone promises, so the
  u64 `trade_id` is `seq * 65536 + k`, k the trade's position among the trades of the same
  `seq` (a taker order hitting several makers shares one `seq`, and its rows may span
  messages: the count continues across them). Distinct trades get distinct ids, and ids
  grow in match order.
- `orderbook.1` is snapshots only: parsed as a BookTicker whose `update_id` is its `seq`.
  An empty side reads as price 0, quantity 0.
"""

from __future__ import annotations

from typing import Any

import orjson

from mdpipe.venues.base import (
    Ack,
    Alive,
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    Event,
    Ticker,
    Trade,
    Trades,
)
from mdpipe.venues.errors import (
    BAD_NUMBER,
    BAD_TYPE,
    MALFORMED_JSON,
    MAX_ID,
    MAX_MS,
    MISSING_FIELD,
    UNKNOWN_EVENT,
    UNKNOWN_STREAM,
    FeedError,
)
from mdpipe.venues.levels import BYBIT_BOOK, PlainLevels, parse_levels, plain_levels

LINEAR = "linear"
SPOT = "spot"
MARKETS = (LINEAR, SPOT)
WS_PATH = "/v5/public/{market}"
MAX_ARGS_PER_REQUEST = 10  # spot refuses more ("args size >10"); ingest sends one per request
MAX_ARGS_CHARS = 21_000  # per connection
PING = b'{"op":"ping","req_id":"hb"}'
PING_INTERVAL = 20.0
TRADE_ID_SPAN = 65_536  # trades of one seq: trade_id = seq * TRADE_ID_SPAN + k

_INT = int


def book_topic(depth: int, symbol: str) -> str:
    """'orderbook.50.BTCUSDT'."""
    return f"orderbook.{depth}.{symbol}"


def trade_topic(symbol: str) -> str:
    """'publicTrade.BTCUSDT'."""
    return f"publicTrade.{symbol}"


def ticker_topic(symbol: str) -> str:
    """'tickers.BTCUSDT'."""
    return f"tickers.{symbol}"


# tickers.{symbol} keys -> ticker fields. Linear sends a snapshot, then deltas holding only
# the fields that changed (merged into the last state by the ingest); spot sends snapshots
# without bid/ask, funding or open interest. `usdIndexPrice` (spot) is the base asset's USD
# index, not the pair's: not an index price of the symbol, so not used.
_TICKER_KEYS = (
    ("lastPrice", "last_price"),
    ("markPrice", "mark_price"),
    ("indexPrice", "index_price"),
    ("openInterest", "open_interest"),
    ("prevPrice24h", "open_24h"),
    ("highPrice24h", "high_24h"),
    ("lowPrice24h", "low_24h"),
    ("volume24h", "volume_24h"),
    ("turnover24h", "quote_volume_24h"),
    ("bid1Price", "bid_price"),
    ("bid1Size", "bid_qty"),
    ("ask1Price", "ask_price"),
    ("ask1Size", "ask_qty"),
)


# tickers.{symbol} numeric keys not kept, checked all the same: a frame with a broken field is
# a bad frame, whichever field it is ("" stands for no value).
_TICKER_SIGNED = ("price24hPcnt", "basisRate", "basis")
_TICKER_UNSIGNED = (
    "prevPrice1h",
    "openInterestValue",
    "usdIndexPrice",
    "predictedDeliveryPrice",
    "deliveryFeeRate",
    "preOpenPrice",
    "preQty",
    "fundingCap",
)


def _signed(value: Any, name: str) -> float:
    """A finite decimal string of any sign (a funding rate)."""
    if type(value) is not str:
        raise FeedError(BAD_TYPE, f"{name} is {type(value).__name__}, not a decimal string")
    try:
        number = float(value)
    except ValueError:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is out of range")
    return number


def request(op: str, req_id: str, args: list[str]) -> bytes:
    """A subscribe or unsubscribe request."""
    return orjson.dumps({"op": op, "req_id": req_id, "args": args})


def _missing(what: str, exc: KeyError) -> FeedError:
    return FeedError(MISSING_FIELD, f"{what} lacks {exc.args[0]!r}")


def _number(value: Any, name: str) -> float:
    """A decimal string > 0, or 0 for an empty side."""
    if type(value) is not str:
        raise FeedError(BAD_TYPE, f"{name} is {type(value).__name__}, not a decimal string")
    try:
        number = float(value)
    except ValueError:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is not a number") from None
    if not 0.0 <= number < float("inf"):
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is out of range")
    return number


class BybitParser:
    """Turns raw Bybit public messages into events, or raises FeedError.

    Keeps, per symbol, the last trade's `seq` and position, to number trades (see above).
    """

    __slots__ = ("market", "_trade_seq", "_trade_k")

    def __init__(self, market: str) -> None:
        if market not in MARKETS:
            raise ValueError(f"market must be one of {MARKETS}, got {market!r}")
        self.market = market
        self._trade_seq: dict[str, int] = {}
        self._trade_k: dict[str, int] = {}

    def parse(self, raw: bytes | str) -> Event:
        """Parse one WebSocket text message."""
        # Bybit deletes a level with size "0": spelled "0.0" it takes the fast path (which
        # reads only decimals with a dot); the value is the same.
        plain = plain_levels(
            raw.replace(b',"0"]', b',"0.0"]') if type(raw) is bytes else raw, BYBIT_BOOK
        )
        if plain is not None:
            try:
                msg = orjson.loads(plain.rest)
            except orjson.JSONDecodeError:
                msg = None
            if type(msg) is dict:
                topic = msg.get("topic")
                if type(topic) is str and topic.startswith("orderbook."):
                    return self._book(msg, topic, plain)
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FeedError(MALFORMED_JSON, str(exc)) from None
        if type(msg) is not dict:
            raise FeedError(BAD_TYPE, "message is not a JSON object")
        topic = msg.get("topic")
        if topic is None:
            return self._op(msg)
        if type(topic) is not str:
            raise FeedError(BAD_TYPE, "topic is not a string")
        if topic.startswith("orderbook."):
            return self._book(msg, topic, None)
        if topic.startswith("publicTrade."):
            return self._trades(msg)
        if topic.startswith("tickers."):
            return self._ticker(msg)
        raise FeedError(UNKNOWN_STREAM, f"topic {topic!r}")

    def _ticker(self, msg: dict) -> Ticker:
        """A tickers.{symbol} snapshot or delta: the fields it holds (an empty string is a
        field the venue has no value for: left out)."""
        try:
            kind, ts, data = msg["type"], msg["ts"], msg["data"]
            symbol = data["symbol"]
        except KeyError as exc:
            raise _missing("tickers", exc) from None
        except TypeError:
            raise FeedError(BAD_TYPE, "tickers data is not an object") from None
        if kind not in ("snapshot", "delta") or type(ts) is not _INT or type(symbol) is not str:
            raise FeedError(BAD_TYPE, "tickers type/ts/symbol mistyped")
        if not 0 <= ts < MAX_MS:
            raise FeedError(BAD_NUMBER, f"tickers ts={ts} ms is out of range")
        values: dict[str, float] = {}
        for key, name in _TICKER_KEYS:
            raw = data.get(key)
            if raw is not None and raw != "":
                values[name] = _number(raw, key)
        for key in _TICKER_UNSIGNED:
            raw = data.get(key)
            if raw is not None and raw != "":
                _number(raw, key)
        for key in _TICKER_SIGNED:
            raw = data.get(key)
            if raw is not None and raw != "":
                _signed(raw, key)
        rate = data.get("fundingRate")
        if rate is not None and rate != "":
            values["funding_rate"] = _signed(rate, "fundingRate")
        due = data.get("nextFundingTime")
        if due is not None and due != "":
            if type(due) is not str or not due.isdigit() or not due.isascii():
                raise FeedError(BAD_TYPE, "tickers nextFundingTime is not a ms timestamp string")
            if int(due) >= MAX_MS:
                raise FeedError(BAD_NUMBER, f"tickers nextFundingTime={due} ms is out of range")
            if int(due):
                values["next_funding_ts_ns"] = int(due) * 1_000_000
        return Ticker(symbol, ts, values, kind == "snapshot")

    def _op(self, msg: dict) -> Event:
        op = msg.get("op")
        if op == "pong" or (op == "ping" and msg.get("ret_msg") == "pong"):
            return Alive("pong")
        if op in ("subscribe", "unsubscribe"):
            ok, message, req_id = msg.get("success"), msg.get("ret_msg", ""), msg.get("req_id", "")
            if type(ok) is not bool or type(message) is not str or type(req_id) is not str:
                raise FeedError(BAD_TYPE, f"{op} answer: success, ret_msg, req_id mistyped")
            return Ack(req_id, ok, message, op)
        if "op" in msg:
            raise FeedError(UNKNOWN_EVENT, f"op {op!r}")
        raise FeedError(MISSING_FIELD, "neither a topic message nor an op answer")

    def _book(self, msg: dict, topic: str, plain: PlainLevels | None) -> Event:
        """A book message; `plain` holds its levels when they were read from the raw text."""
        try:
            kind, ts, data = msg["type"], msg["ts"], msg["data"]
            symbol, bids, asks, u, seq = data["s"], data["b"], data["a"], data["u"], data["seq"]
        except KeyError as exc:
            raise _missing("orderbook message", exc) from None
        except TypeError:
            raise FeedError(BAD_TYPE, "orderbook data is not a JSON object") from None
        cts = msg.get("cts", 0)
        if not (
            type(ts) is _INT
            and type(u) is _INT
            and type(seq) is _INT
            and type(cts) is _INT
            and type(symbol) is str
        ):
            raise FeedError(BAD_TYPE, "orderbook ts/cts/u/seq must be integers, s a string")
        if not (1 <= u < MAX_ID and 0 <= seq < MAX_ID and 0 <= ts < MAX_MS and 0 <= cts < MAX_MS):
            raise FeedError(BAD_NUMBER, f"orderbook u={u} seq={seq} ts={ts} cts={cts} out of range")
        if topic.startswith("orderbook.1."):
            if plain is not None:
                return self._top_plain(symbol, kind, plain, seq, ts, cts)
            return self._top(symbol, kind, bids, asks, seq, ts, cts)
        if plain is None:
            bid_prices, bid_qtys = parse_levels(bids, "b")
            ask_prices, ask_qtys = parse_levels(asks, "a")
        else:
            _, bid_prices, bid_qtys, ask_prices, ask_qtys = plain
        if kind == "delta":
            return DepthDiff(
                symbol, ts, cts, u, seq, -1, bid_prices, bid_qtys, ask_prices, ask_qtys
            )
        if kind == "snapshot":
            return DepthSnapshot(
                seq, bid_prices, bid_qtys, ask_prices, ask_qtys, ts, cts, symbol, u
            )
        raise FeedError(UNKNOWN_EVENT, f"orderbook type {kind!r}")

    def _top(
        self, symbol: str, kind: Any, bids: Any, asks: Any, seq: int, ts: int, cts: int
    ) -> BookTicker:
        if kind != "snapshot":
            raise FeedError(UNKNOWN_EVENT, f"orderbook.1 type {kind!r} (snapshots only)")
        bid_prices, bid_qtys = parse_levels(bids, "b")
        ask_prices, ask_qtys = parse_levels(asks, "a")
        return self._top_levels(symbol, kind, bid_prices, bid_qtys, ask_prices, ask_qtys, seq, ts,
                                cts)  # fmt: skip

    def _top_plain(
        self, symbol: str, kind: Any, plain: PlainLevels, seq: int, ts: int, cts: int
    ) -> BookTicker:
        _, bid_prices, bid_qtys, ask_prices, ask_qtys = plain
        return self._top_levels(symbol, kind, bid_prices, bid_qtys, ask_prices, ask_qtys, seq, ts,
                                cts)  # fmt: skip

    def _top_levels(
        self,
        symbol: str,
        kind: Any,
        bid_prices: list[float],
        bid_qtys: list[float],
        ask_prices: list[float],
        ask_qtys: list[float],
        seq: int,
        ts: int,
        cts: int,
    ) -> BookTicker:
        if kind != "snapshot":
            raise FeedError(UNKNOWN_EVENT, f"orderbook.1 type {kind!r} (snapshots only)")
        if len(bid_prices) > 1 or len(ask_prices) > 1:
            raise FeedError(BAD_NUMBER, "orderbook.1 holds more than one level a side")
        return BookTicker(
            symbol,
            seq,
            bid_prices[0] if bid_prices else 0.0,
            bid_qtys[0] if bid_qtys else 0.0,
            ask_prices[0] if ask_prices else 0.0,
            ask_qtys[0] if ask_qtys else 0.0,
            ts,
            cts,
        )

    def _trades(self, msg: dict) -> Trades:
        try:
            ts, rows = msg["ts"], msg["data"]
        except KeyError as exc:
            raise _missing("publicTrade message", exc) from None
        if type(ts) is not _INT or type(rows) is not list or not rows:
            raise FeedError(BAD_TYPE, "publicTrade ts must be an integer, data a non-empty list")
        out = []
        last_seq, last_k = self._trade_seq, self._trade_k
        for row in rows:
            try:
                t, symbol, side, size, price, seq = (
                    row["T"], row["s"], row["S"], row["v"], row["p"], row["seq"]
                )  # fmt: skip
            except KeyError as exc:
                raise _missing("publicTrade row", exc) from None
            except TypeError:
                raise FeedError(BAD_TYPE, "publicTrade row is not a JSON object") from None
            if not (type(t) is _INT and type(seq) is _INT and type(symbol) is str):
                raise FeedError(BAD_TYPE, "publicTrade T/seq must be integers, s a string")
            if side not in ("Buy", "Sell"):
                raise FeedError(BAD_TYPE, f"publicTrade S={side!r} is not Buy or Sell")
            if not (0 <= seq < MAX_ID // TRADE_ID_SPAN and 0 <= t < MAX_MS and 0 <= ts < MAX_MS):
                raise FeedError(BAD_NUMBER, f"publicTrade seq={seq} T={t} ts={ts} out of range")
            p, q = _number(price, "p"), _number(size, "v")
            if p == 0.0 or q == 0.0:
                raise FeedError(BAD_NUMBER, "publicTrade price and size must be > 0")
            k = last_k.get(symbol, -1) + 1 if last_seq.get(symbol) == seq else 0
            if k >= TRADE_ID_SPAN:
                raise FeedError(BAD_NUMBER, f"more than {TRADE_ID_SPAN} trades share seq {seq}")
            trade_id = seq * TRADE_ID_SPAN + k
            out.append(Trade(symbol, ts, t, trade_id, p, q, side == "Sell", trade_id, trade_id,
                             False, ""))  # fmt: skip
            last_seq[symbol], last_k[symbol] = seq, k
        return Trades(out)
