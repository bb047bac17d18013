"""Binance spot and USD-M futures wire protocol: endpoints and a strict, fast parser.

Free of I/O: the ingest process owns the sockets and HTTP; this module only builds the URLs
it opens and turns the bytes it receives into events. Every malformed input raises
`FeedError` with a short `kind`, so the caller can count per kind and dead-letter the raw
message without ever crashing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from math import inf
from typing import Any, NamedTuple

import orjson

from mdpipe.venues.base import (
    Ack,
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    Event,
    MarkPrice,
    ServerShutdown,
    Ticker,
    Trade,
)
from mdpipe.venues.errors import (
    BAD_NUMBER,
    BAD_TYPE,
    ERROR_KINDS,
    MALFORMED_JSON,
    MAX_ID,
    MAX_MS,
    MISSING_FIELD,
    UNKNOWN_EVENT,
    UNKNOWN_STREAM,
    FeedError,
)
from mdpipe.venues.levels import (
    DIFF_IN_ENVELOPE,
    SNAPSHOT,
    Floats,
    PlainLevels,
    parse_levels,
    plain_levels,
)

__all__ = [
    "BAD_NUMBER",
    "BAD_TYPE",
    "ERROR_KINDS",
    "FUTURES",
    "MALFORMED_JSON",
    "MARKETS",
    "MAX_STREAMS_PER_CONNECTION",
    "MISSING_FIELD",
    "SPOT",
    "UNKNOWN_EVENT",
    "UNKNOWN_STREAM",
    "BinanceParser",
    "BookTicker",
    "Connection",
    "DepthDiff",
    "DepthSnapshot",
    "Event",
    "FeedError",
    "ServerShutdown",
    "Trade",
    "parse_levels",
    "parse_snapshot",
    "plan_connections",
    "snapshot_url",
]

FUTURES = "futures"
SPOT = "spot"
MARKETS = (FUTURES, SPOT)

FUTURES_WS_BASE = "wss://fstream.binance.com"
SPOT_WS_BASE = "wss://stream.binance.com:9443"
FUTURES_REST_BASE = "https://fapi.binance.com"
SPOT_REST_BASE = "https://api.binance.com"

MAX_STREAMS_PER_CONNECTION = 1024
FUTURES_SNAPSHOT_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
SPOT_SNAPSHOT_MAX_LIMIT = 5000
TRADE_STREAMS = ("trade", "aggTrade")

_DEPTH_STREAM = re.compile(r"depth(@\d+ms)?")
_SYMBOL = re.compile(r"[A-Za-z0-9]+")

# ---------------------------------------------------------------------------------------------
# Endpoints


class Connection(NamedTuple):
    """One WebSocket connection to open: its URL and the streams it carries."""

    url: str
    streams: tuple[str, ...]


def _check_market(market: str) -> None:
    if market not in MARKETS:
        raise ValueError(f"market must be one of {MARKETS}, got {market!r}")


def _stream_symbols(symbols: Iterable[str]) -> list[str]:
    names = [s.lower() for s in symbols]
    if not names:
        raise ValueError("no symbols given")
    for name in names:
        if not _SYMBOL.fullmatch(name):
            raise ValueError(f"bad symbol {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate symbols in {names}")
    return names


def _chunks(base: str, path: str, streams: list[str], max_streams: int) -> list[Connection]:
    return [
        Connection(f"{base}{path}?streams={'/'.join(chunk)}", tuple(chunk))
        for chunk in (streams[i : i + max_streams] for i in range(0, len(streams), max_streams))
    ]


def plan_connections(
    market: str,
    symbols: Iterable[str],
    depth: str = "depth@100ms",
    trade: str | None = "aggTrade",
    book_ticker: bool = True,
    ws_base: str | None = None,
    max_streams: int = MAX_STREAMS_PER_CONNECTION,
    mark_price: bool = False,
    ticker: bool = False,
) -> list[Connection]:
    """The combined-stream connections to open for these symbols, at most `max_streams` each.

    Futures needs two routes since the 2026 URL split: depth and bookTicker on /public,
    trades on /market (a stream on the wrong route is accepted and never delivers).
    Spot carries everything on /stream. mark_price adds `<sym>@markPrice@1s` on /market:
    it delivers every second even when nothing trades, so a quiet market is told from a
    dead connection or a wrong route. ticker adds `<sym>@ticker` (24 h statistics) on
    connections of their own (/market on futures, /stream on spot): the book and trade URLs
    keep their length, and a slow ticker never delays a trade.
    """
    _check_market(market)
    if not _DEPTH_STREAM.fullmatch(depth):
        raise ValueError(f"depth stream must look like 'depth' or 'depth@100ms', got {depth!r}")
    if trade is not None and trade not in TRADE_STREAMS:
        raise ValueError(f"trade stream must be one of {TRADE_STREAMS} or None, got {trade!r}")
    if not 1 <= max_streams <= MAX_STREAMS_PER_CONNECTION:
        raise ValueError(f"max_streams must be 1..{MAX_STREAMS_PER_CONNECTION}, got {max_streams}")
    names = _stream_symbols(symbols)
    book_streams = []
    for name in names:
        book_streams.append(f"{name}@{depth}")
        if book_ticker:
            book_streams.append(f"{name}@bookTicker")
    trade_streams = [f"{name}@{trade}" for name in names] if trade else []
    if market == SPOT:
        base = (ws_base or SPOT_WS_BASE).rstrip("/")
        streams = []
        for i, name in enumerate(names):
            streams.extend(s for s in book_streams if s.startswith(f"{name}@"))
            if trade_streams:
                streams.append(trade_streams[i])
        tickers = [f"{name}@ticker" for name in names] if ticker else []
        return _chunks(base, "/stream", streams, max_streams) + _chunks(
            base, "/stream", tickers, max_streams
        )
    base = (ws_base or FUTURES_WS_BASE).rstrip("/")
    market_streams = []
    for i, name in enumerate(names):
        if trade_streams:
            market_streams.append(trade_streams[i])
        if mark_price:
            market_streams.append(f"{name}@markPrice@1s")
    tickers = [f"{name}@ticker" for name in names] if ticker else []
    return (
        _chunks(base, "/public/stream", book_streams, max_streams)
        + _chunks(base, "/market/stream", market_streams, max_streams)
        + _chunks(base, "/market/stream", tickers, max_streams)
    )


def snapshot_url(market: str, symbol: str, limit: int = 1000, rest_base: str | None = None) -> str:
    """The REST depth-snapshot URL for one symbol (limit checked against the market's rules)."""
    _check_market(market)
    if not _SYMBOL.fullmatch(symbol):
        raise ValueError(f"bad symbol {symbol!r}")
    if market == FUTURES:
        if limit not in FUTURES_SNAPSHOT_LIMITS:
            raise ValueError(f"futures snapshot limit must be one of {FUTURES_SNAPSHOT_LIMITS}")
        base, path = rest_base or FUTURES_REST_BASE, "/fapi/v1/depth"
    else:
        if not 1 <= limit <= SPOT_SNAPSHOT_MAX_LIMIT:
            raise ValueError(f"spot snapshot limit must be 1..{SPOT_SNAPSHOT_MAX_LIMIT}")
        base, path = rest_base or SPOT_REST_BASE, "/api/v3/depth"
    return f"{base.rstrip('/')}{path}?symbol={symbol.upper()}&limit={limit}"


# ---------------------------------------------------------------------------------------------
# Events


# ---------------------------------------------------------------------------------------------
# Parsing


_INT_ONLY = {int}

# 24hrTicker keys -> ticker fields (every market), and the top of book spot adds.
_TICKER_KEYS = (
    ("c", "last_price"),
    ("o", "open_24h"),
    ("h", "high_24h"),
    ("l", "low_24h"),
    ("v", "volume_24h"),
    ("q", "quote_volume_24h"),
)
_TICKER_TOP_KEYS = (("b", "bid_price"), ("B", "bid_qty"), ("a", "ask_price"), ("A", "ask_qty"))
# 24hrTicker fields not kept, checked all the same: a frame with a broken field is a bad frame,
# whichever field it is. Price change and its percent are signed; spot adds `x`.
_TICKER_SIGNED = ("p", "P")
_TICKER_UNSIGNED = ("w", "Q", "x")
_TICKER_INTS = ("F", "L", "n")
_TICKER_TIMES = ("O", "C")


def _signed(value: Any, name: str) -> float:
    """A decimal string that may be negative or zero (a funding rate)."""
    if type(value) is not str:
        raise FeedError(BAD_TYPE, f"{name} is {type(value).__name__}, not a decimal string")
    try:
        number = float(value)
    except ValueError:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is not a number") from None
    if number != number or number in (inf, -inf):
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is out of range")
    return number


def _time_ms(value: Any, name: str) -> int:
    """A millisecond time that the rings can hold in int64 nanoseconds."""
    if type(value) is not int:
        raise FeedError(BAD_TYPE, f"{name} is {type(value).__name__}, not an integer")
    if not 0 <= value < MAX_MS:
        raise FeedError(BAD_NUMBER, f"{name}={value} ms is out of range")
    return value


def _check_trade_range(event: str, event_time: int, trade_time: int, *ids: int) -> None:
    """BAD_NUMBER unless the times and ids fit a trade record."""
    if not (0 <= event_time < MAX_MS and 0 <= trade_time < MAX_MS):
        raise FeedError(BAD_NUMBER, f"{event} E/T out of range")
    for i in ids:
        if not 0 <= i < MAX_ID:
            raise FeedError(BAD_NUMBER, f"{event} id {i} out of range")


def _ints_ok(*values: Any) -> bool:
    """True when every value is an int (not a bool, which is an int subclass)."""
    return set(map(type, values)) <= _INT_ONLY


def _number(value: Any, name: str, allow_zero: bool) -> float:
    if type(value) is not str:
        raise FeedError(BAD_TYPE, f"{name} is {type(value).__name__}, not a decimal string")
    try:
        number = float(value)
    except ValueError:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is not a number") from None
    if not (number > 0.0 or (allow_zero and number == 0.0)) or number == inf:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is out of range")
    return number


def _levels(bids: Any, asks: Any) -> tuple[Floats, Floats, Floats, Floats]:
    bid_prices, bid_qtys = parse_levels(bids, "b")
    ask_prices, ask_qtys = parse_levels(asks, "a")
    return bid_prices, bid_qtys, ask_prices, ask_qtys


def _missing(event: str, exc: KeyError) -> FeedError:
    return FeedError(MISSING_FIELD, f"{event} lacks {exc.args[0]!r}")


def _depth_diff(
    symbol: Any,
    event_time: Any,
    tx_time: Any,
    first: Any,
    last: Any,
    prev: Any,
    bids: Any,
    asks: Any,
    plain: PlainLevels | None,
) -> DepthDiff:
    """Check and build a diff of either market (spot passes tx_time 0 and prev -1)."""
    if not (
        type(first) is int
        and type(last) is int
        and type(prev) is int
        and type(event_time) is int
        and type(tx_time) is int
        and type(symbol) is str
    ):
        raise FeedError(BAD_TYPE, "depthUpdate ids/times must be integers, s a string")
    if first > last:
        raise FeedError(BAD_NUMBER, f"depthUpdate U={first} > u={last}")
    if not (
        first >= 0
        and last < MAX_ID
        and -1 <= prev < MAX_ID
        and 0 <= event_time < MAX_MS
        and 0 <= tx_time < MAX_MS
    ):
        raise FeedError(BAD_NUMBER, "depthUpdate ids/times out of range")
    if plain is None:
        return DepthDiff(symbol, event_time, tx_time, first, last, prev, *_levels(bids, asks))
    return DepthDiff(symbol, event_time, tx_time, first, last, prev, *plain[1:])


class BinanceParser:
    """Turns raw combined-stream messages of one market into events, or raises FeedError."""

    __slots__ = ("market", "_depth", "_handlers")

    def __init__(self, market: str) -> None:
        _check_market(market)
        self.market = market
        self._depth = self._futures_depth if market == FUTURES else self._spot_depth
        self._handlers: dict[str, Callable[[Any], Event]] = {
            "depthUpdate": lambda data: self._depth(data, None),
            "bookTicker": self._book_ticker,
            "trade": self._trade,
            "aggTrade": self._agg_trade,
            "serverShutdown": self._server_shutdown,
            "markPriceUpdate": self._mark_price,
            "24hrTicker": self._ticker,
        }

    def parse(self, raw: bytes | str) -> Event:
        """Parse one WebSocket text message (a combined-stream envelope or a bare event)."""
        plain = plain_levels(raw, DIFF_IN_ENVELOPE)
        if plain is not None:
            diff = self._plain_depth(plain)
            if diff is not None:
                return diff
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FeedError(MALFORMED_JSON, str(exc)) from None
        try:
            data = msg["data"]
            event = data["e"]
        except KeyError:
            return self._without_event_type(msg)
        except TypeError:
            raise FeedError(BAD_TYPE, "message or its data is not a JSON object") from None
        handler = self._handlers.get(event) if type(event) is str else None
        return (handler or self._handler(event))(data)

    def _plain_depth(self, plain: PlainLevels) -> DepthDiff | None:
        """A depthUpdate whose levels were read from the raw text; None to decode it all."""
        try:
            msg = orjson.loads(plain.rest)
        except orjson.JSONDecodeError:
            return None
        data = msg.get("data") if type(msg) is dict else None
        if type(data) is not dict or data.get("e") != "depthUpdate":
            return None
        return self._depth(data, plain)

    def _handler(self, event: Any) -> Callable[[Any], Event]:
        try:
            return self._handlers[event]
        except KeyError:
            raise FeedError(UNKNOWN_EVENT, f"event type {event!r}") from None
        except TypeError:
            raise FeedError(BAD_TYPE, f"event type {event!r} is not a string") from None

    def _without_event_type(self, msg: Any) -> Event:
        """Spot bookTicker (no `e`, known by its stream), a bare event, or garbage."""
        if type(msg) is not dict:
            raise FeedError(BAD_TYPE, "message is not a JSON object")
        if "data" not in msg:
            if "e" in msg:
                return self._handler(msg["e"])(msg)
            if "id" in msg and ("result" in msg or "code" in msg):
                # The answer to a SUBSCRIBE / UNSUBSCRIBE request sent on this connection.
                ok = "code" not in msg
                return Ack(str(msg["id"]), ok, "" if ok else str(msg.get("msg", "")), "request")
            raise FeedError(MISSING_FIELD, "neither a combined-stream envelope nor an event")
        data = msg["data"]
        if type(data) is not dict:
            raise FeedError(BAD_TYPE, "data is not a JSON object")
        stream = msg.get("stream")
        if type(stream) is not str:
            raise FeedError(MISSING_FIELD, "envelope lacks 'stream' and data lacks 'e'")
        if stream.endswith("@bookTicker") and self.market == SPOT:
            return self._book_ticker(data)
        raise FeedError(UNKNOWN_STREAM, f"stream {stream!r} without an event type")

    def _futures_depth(self, d: dict, plain: PlainLevels | None) -> DepthDiff:
        try:
            symbol, event_time, tx_time = d["s"], d["E"], d["T"]
            first, last, prev, bids, asks = d["U"], d["u"], d["pu"], d["b"], d["a"]
        except KeyError as exc:
            raise _missing("depthUpdate", exc) from None
        return _depth_diff(symbol, event_time, tx_time, first, last, prev, bids, asks, plain)

    def _spot_depth(self, d: dict, plain: PlainLevels | None) -> DepthDiff:
        try:
            symbol, event_time = d["s"], d["E"]
            first, last, bids, asks = d["U"], d["u"], d["b"], d["a"]
        except KeyError as exc:
            raise _missing("depthUpdate", exc) from None
        return _depth_diff(symbol, event_time, 0, first, last, -1, bids, asks, plain)

    def _book_ticker(self, d: dict) -> BookTicker:
        try:
            symbol, update_id = d["s"], d["u"]
            bid, bid_qty, ask, ask_qty = d["b"], d["B"], d["a"], d["A"]
            if self.market == FUTURES:
                event_time, tx_time = d["E"], d["T"]
            else:
                event_time, tx_time = d.get("E", 0), d.get("T", 0)
        except KeyError as exc:
            raise _missing("bookTicker", exc) from None
        if not (_ints_ok(update_id, event_time, tx_time) and type(symbol) is str):
            raise FeedError(BAD_TYPE, "bookTicker u/E/T must be integers, s a string")
        # An empty side is reported as price 0, quantity 0.
        return BookTicker(
            symbol,
            update_id,
            _number(bid, "b", True),
            _number(bid_qty, "B", True),
            _number(ask, "a", True),
            _number(ask_qty, "A", True),
            event_time,
            tx_time,
        )

    def _trade(self, d: dict) -> Trade:
        try:
            symbol, event_time, trade_time, trade_id = d["s"], d["E"], d["T"], d["t"]
            price, qty, maker = d["p"], d["q"], d["m"]
            order_type = d["X"] if self.market == FUTURES else ""
        except KeyError as exc:
            raise _missing("trade", exc) from None
        # Every check below in one expression for a good trade (most of the parse's time was
        # in the helpers' calls); anything else takes them one by one, which name the fault.
        if (
            type(event_time) is int
            and type(trade_time) is int
            and type(trade_id) is int
            and type(symbol) is str
            and type(maker) is bool
            and type(order_type) is str
            and type(price) is str
            and type(qty) is str
            and 0 <= event_time < MAX_MS
            and 0 <= trade_time < MAX_MS
            and 0 <= trade_id < MAX_ID
        ):
            try:
                p, q = float(price), float(qty)
            except ValueError:
                pass
            else:
                if 0.0 < p < inf and 0.0 < q < inf:
                    return Trade(
                        symbol,
                        event_time,
                        trade_time,
                        trade_id,
                        p,
                        q,
                        maker,
                        trade_id,
                        trade_id,
                        False,
                        order_type,
                    )
        if not (_ints_ok(event_time, trade_time, trade_id) and type(symbol) is str):
            raise FeedError(BAD_TYPE, "trade E/T/t must be integers, s a string")
        if type(maker) is not bool or type(order_type) is not str:
            raise FeedError(BAD_TYPE, "trade m must be a boolean, X a string")
        _check_trade_range("trade", event_time, trade_time, trade_id, trade_id)
        return Trade(
            symbol,
            event_time,
            trade_time,
            trade_id,
            _number(price, "p", False),
            _number(qty, "q", False),
            maker,
            trade_id,
            trade_id,
            False,
            order_type,
        )

    def _agg_trade(self, d: dict) -> Trade:
        try:
            symbol, event_time, trade_time, agg_id = d["s"], d["E"], d["T"], d["a"]
            price, qty, maker, first, last = d["p"], d["q"], d["m"], d["f"], d["l"]
        except KeyError as exc:
            raise _missing("aggTrade", exc) from None
        if (  # the checks below in one expression for a good aggTrade (see _trade)
            type(event_time) is int
            and type(trade_time) is int
            and type(agg_id) is int
            and type(first) is int
            and type(last) is int
            and type(symbol) is str
            and type(maker) is bool
            and type(price) is str
            and type(qty) is str
            and 0 <= event_time < MAX_MS
            and 0 <= trade_time < MAX_MS
            and 0 <= agg_id < MAX_ID
            and 0 <= first < MAX_ID
            and 0 <= last < MAX_ID
        ):
            try:
                p, q = float(price), float(qty)
            except ValueError:
                pass
            else:
                if 0.0 < p < inf and 0.0 < q < inf:
                    return Trade(
                        symbol, event_time, trade_time, agg_id, p, q, maker, first, last, True, ""
                    )
        if not (_ints_ok(event_time, trade_time, agg_id, first, last) and type(symbol) is str):
            raise FeedError(BAD_TYPE, "aggTrade E/T/a/f/l must be integers, s a string")
        if type(maker) is not bool:
            raise FeedError(BAD_TYPE, "aggTrade m must be a boolean")
        _check_trade_range("aggTrade", event_time, trade_time, agg_id, first, last)
        return Trade(
            symbol,
            event_time,
            trade_time,
            agg_id,
            _number(price, "p", False),
            _number(qty, "q", False),
            maker,
            first,
            last,
            True,
            "",
        )

    def _mark_price(self, d: dict) -> MarkPrice:
        try:
            symbol, event_time, price = d["s"], d["E"], d["p"]
        except KeyError as exc:
            raise _missing("markPriceUpdate", exc) from None
        if type(symbol) is not str:
            raise FeedError(BAD_TYPE, "markPriceUpdate s must be a string")
        _time_ms(event_time, "E")
        mark = _number(price, "p", False)
        settle = d.get("P")
        if settle is not None:
            _number(settle, "P", True)
        values = {"mark_price": mark}
        index = d.get("i")
        if index is not None:
            values["index_price"] = _number(index, "i", False)
        rate = d.get("r")
        if rate is not None and rate != "":  # delivery contracts send "" (no funding)
            values["funding_rate"] = _signed(rate, "r")
        next_funding = d.get("T")
        if next_funding is not None and _time_ms(next_funding, "T") > 0:
            values["next_funding_ts_ns"] = next_funding * 1_000_000
        return MarkPrice(symbol, event_time, mark, values)

    def _ticker(self, d: dict) -> Ticker:
        """A `24hrTicker`: last price and the rolling 24 h statistics (spot adds the top)."""
        try:
            symbol, event_time = d["s"], d["E"]
            fields = {name: d[key] for key, name in _TICKER_KEYS}
        except KeyError as exc:
            raise _missing("24hrTicker", exc) from None
        if type(symbol) is not str:
            raise FeedError(BAD_TYPE, "24hrTicker s must be a string")
        _time_ms(event_time, "E")
        values = {name: _number(v, name, True) for name, v in fields.items()}
        for key, name in _TICKER_TOP_KEYS:
            if key in d:
                values[name] = _number(d[key], key, True)
        for key in _TICKER_SIGNED:
            if key in d:
                _signed(d[key], key)
        for key in _TICKER_UNSIGNED:
            if key in d:
                _number(d[key], key, True)
        for key in _TICKER_TIMES:
            if key in d:
                _time_ms(d[key], key)
        for key in _TICKER_INTS:
            if key in d and type(d[key]) is not int:
                raise FeedError(
                    BAD_TYPE, f"24hrTicker {key} is {type(d[key]).__name__}, not an integer"
                )
        return Ticker(symbol, event_time, values)

    def _server_shutdown(self, d: dict) -> ServerShutdown:
        event_time = d.get("E", 0)
        if type(event_time) is not int:
            raise FeedError(BAD_TYPE, "serverShutdown E must be an integer")
        return ServerShutdown(event_time)


def parse_snapshot(raw: bytes | str) -> DepthSnapshot:
    """Parse a REST depth snapshot body (spot or futures) or raise FeedError.

    Levels are read like diff levels (same float conversion), so a price from a snapshot
    and from a diff is always the same float key in the book.
    """
    plain = plain_levels(raw, SNAPSHOT)
    if plain is not None:
        try:
            msg = orjson.loads(plain.rest)
        except orjson.JSONDecodeError:
            plain = None
    if plain is None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FeedError(MALFORMED_JSON, str(exc)) from None
    if type(msg) is not dict:
        raise FeedError(BAD_TYPE, "snapshot is not a JSON object")
    try:
        last_update_id, bids, asks = msg["lastUpdateId"], msg["bids"], msg["asks"]
    except KeyError as exc:
        raise _missing("depth snapshot", exc) from None
    event_time, tx_time = msg.get("E", 0), msg.get("T", 0)
    if not _ints_ok(last_update_id, event_time, tx_time):
        raise FeedError(BAD_TYPE, "snapshot lastUpdateId/E/T must be integers")
    if not (0 <= last_update_id < MAX_ID and 0 <= event_time < MAX_MS and 0 <= tx_time < MAX_MS):
        raise FeedError(BAD_NUMBER, "snapshot lastUpdateId/E/T out of range")
    if plain is None:
        bid_prices, bid_qtys = parse_levels(bids, "bids")
        ask_prices, ask_qtys = parse_levels(asks, "asks")
    else:
        _, bid_prices, bid_qtys, ask_prices, ask_qtys = plain
    return DepthSnapshot(
        last_update_id, bid_prices, bid_qtys, ask_prices, ask_qtys, event_time, tx_time
    )
