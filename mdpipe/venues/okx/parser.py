"""OKX v5 public frames to the common events: a strict parser that trusts no value unchecked.

- `books` update -> DepthDiff: first_id = last_id = seqId (NO_SEQ_ID when the message has
  none), prev_id = prevSeqId (-1 when none), event_time = ts; `check` holds an OkxCheck
  (the checksum and each level's raw `px:sz` text) when the checksum is non-zero.
- `books` snapshot -> DepthSnapshot with its symbol (in-band), same ids and check.
- `bbo-tbt` / `books5` -> BookTicker (update_id = seqId): the venue's own top of book.
- `trades` -> Trade: trade_id = tradeId (the last fill), first_trade_id = tradeId - count + 1,
  buyer_is_maker = the taker sold. A push holding several items (one per taker order and
  price) is a Trades event, in order.
- text `pong` -> Alive; subscribe/unsubscribe acks -> Ack; `{"event":"error"}` -> Ack with
  ok False and the code explained; notice 64008 -> ServerShutdown (reconnect before the cut).

Every malformed input raises FeedError with a short kind. Levels are `[px, sz, "0",
orders]`: only px and sz are read (the third field is deprecated, the fourth an order count).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import chain
from math import inf
from typing import Any, NamedTuple

import orjson

from mdpipe.venues.base import (
    Ack,
    Alive,
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    Event,
    ServerShutdown,
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
from mdpipe.venues.okx.protocol import (
    BBO_TBT,
    BOOKS,
    BOOKS5,
    FUNDING_RATE,
    MARK_PRICE,
    OPEN_INTEREST,
    TICKERS,
    TRADES,
    UPGRADE_NOTICE,
    describe_error,
)

NO_SEQ_ID = 0  # first_id/last_id of a books message that carries no seqId
NO_PREV = -1  # prev_id of one without prevSeqId (and of every snapshot)
PONG = Alive("pong")

_LIST_ONLY = {list}
_SIDES = ("buy", "sell")
_PLAIN = str.maketrans("", "", "0123456789.")


class OkxCheck(NamedTuple):
    """A books message's checksum and the raw text of its levels, aligned with the floats."""

    checksum: int
    bid_text: list[str]
    ask_text: list[str]


def _bad_levels(levels: Any, side: str) -> FeedError:
    """Say what is wrong with a level list that was refused."""
    if type(levels) is not list:
        return FeedError(BAD_TYPE, f"{side} is {type(levels).__name__}, not a list")
    for level in levels:
        if type(level) is not list or len(level) < 2:
            return FeedError(BAD_TYPE, f"{side} level {level!r} is not a [px, sz, ...] list")
        if not all(type(v) is str for v in level):
            return FeedError(BAD_TYPE, f"{side} level {level!r} holds a non-string")
        px, sz = level[0], level[1]
        try:
            price = float(px)
            float(sz)
        except ValueError:
            return FeedError(BAD_NUMBER, f"{side} level {level!r} is not a number")
        if px.translate(_PLAIN) or sz.translate(_PLAIN):
            return FeedError(BAD_NUMBER, f"{side} level {level!r} is not a plain decimal")
        if price == 0.0:
            return FeedError(BAD_NUMBER, f"{side} level {level!r} has price 0")
    return FeedError(BAD_NUMBER, f"{side} levels out of range")


def parse_levels(levels: Any, side: str) -> tuple[list[float], list[float]]:
    """(prices, sizes) of a level list: strings, prices > 0, sizes >= 0, all finite."""
    if type(levels) is not list:
        raise _bad_levels(levels, side)
    if not levels:
        return [], []
    try:
        prices = [float(lv[0]) for lv in levels]
        qtys = [float(lv[1]) for lv in levels]
        # Every field a string (float() also takes numbers); one join checks them all.
        text = "".join(chain.from_iterable(levels))
    except (TypeError, ValueError, IndexError, KeyError):
        raise _bad_levels(levels, side) from None
    if (
        "-" in text
        or "e" in text
        or "E" in text
        or 0.0 in prices
        or not sum(prices) + sum(qtys) < inf
        or set(map(type, levels)) != _LIST_ONLY
    ):
        raise _bad_levels(levels, side)
    return prices, qtys


def level_text(levels: list[list[str]]) -> list[str]:
    """Each level's `px:sz` exactly as received (what the checksum is computed over)."""
    return [lv[0] + ":" + lv[1] for lv in levels]


def _ms(value: Any, name: str) -> int:
    """A millisecond timestamp or id sent as a decimal string."""
    if type(value) is not str or not value.isdigit() or not value.isascii():
        raise FeedError(BAD_TYPE, f"{name}={value!r} must be a string of digits")
    number = int(value)
    if number >= MAX_ID:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is out of range")
    return number


def _seq(d: dict, key: str, absent: int) -> int:
    value = d.get(key)
    if value is None:
        return absent
    if type(value) is not int:
        raise FeedError(BAD_TYPE, f"{key}={value!r} must be an integer")
    if not -1 <= value < MAX_ID:
        raise FeedError(BAD_NUMBER, f"{key}={value} is out of range")
    return value


def _number(value: Any, name: str) -> float:
    if type(value) is not str or not value or value.translate(_PLAIN):
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is not a plain decimal string")
    try:
        number = float(value)
    except ValueError:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is not a number") from None
    if not 0.0 < number < inf:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is out of range")
    return number


def _signed(value: Any, name: str) -> float:
    """A finite decimal string of any sign (a funding rate)."""
    if type(value) is not str or not value:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is not a decimal string")
    try:
        number = float(value)
    except ValueError:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is not a number") from None
    if number != number or number in (inf, -inf):
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is out of range")
    return number


# Ticker fields per channel. `tickers` volumes: vol24h is contracts (swap) or base (spot);
# volCcy24h is base (swap) or quote (spot), so it is the quote volume on spot only; the
# funding fields are read apart (signed rate; fundingTime is the next settlement).
_TICKER_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    TICKERS: (
        ("last", "last_price"),
        ("bidPx", "bid_price"),
        ("bidSz", "bid_qty"),
        ("askPx", "ask_price"),
        ("askSz", "ask_qty"),
        ("open24h", "open_24h"),
        ("high24h", "high_24h"),
        ("low24h", "low_24h"),
        ("vol24h", "volume_24h"),
    ),
    MARK_PRICE: (("markPx", "mark_price"),),
    FUNDING_RATE: (),
    OPEN_INTEREST: (("oi", "open_interest"),),
}


# Numeric fields of each channel not kept, checked all the same when present: a frame with a
# broken field is a bad frame, whichever field it is ("" stands for no value).
_TICKER_UNSIGNED: dict[str, tuple[str, ...]] = {
    TICKERS: ("lastSz", "volCcy24h", "sodUtc0", "sodUtc8"),
    MARK_PRICE: (),
    FUNDING_RATE: ("impactValue",),
    OPEN_INTEREST: ("oiCcy", "oiUsd"),
}
_TICKER_SIGNED: dict[str, tuple[str, ...]] = {
    TICKERS: (),
    MARK_PRICE: (),
    FUNDING_RATE: (
        "interestRate",
        "maxFundingRate",
        "minFundingRate",
        "nextFundingRate",
        "premium",
        "settFundingRate",
    ),
    OPEN_INTEREST: (),
}
_TICKER_TIMES: dict[str, tuple[str, ...]] = {
    TICKERS: (),
    MARK_PRICE: (),
    FUNDING_RATE: ("nextFundingTime",),
    OPEN_INTEREST: (),
}


def _time(value: Any, name: str) -> int:
    """A millisecond time string that the rings can hold in int64 nanoseconds."""
    ms = _ms(value, name)
    if ms >= MAX_MS:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} ms is out of range")
    return ms


def _only_item(data: Any, what: str) -> dict:
    if type(data) is not list or len(data) != 1 or type(data[0]) is not dict:
        raise FeedError(BAD_TYPE, f"{what} data must be a list of one object")
    return data[0]


def _book_fields(d: dict, what: str) -> tuple[Any, Any, int, int]:
    try:
        bids, asks, ts = d["bids"], d["asks"], d["ts"]
    except KeyError as exc:
        raise FeedError(MISSING_FIELD, f"{what} lacks {exc.args[0]!r}") from None
    checksum = d.get("checksum", 0)
    if type(checksum) is not int:
        raise FeedError(BAD_TYPE, f"checksum={checksum!r} must be an integer")
    return bids, asks, _time(ts, "ts"), checksum


# The fast path: a books push whose levels are all plain decimal strings is read with byte
# translations and one orjson call per side, with no string object per value (in C, when
# mdpipe/venues/_levels.c is built: one pass over the bytes). It declines (None) whenever it
# cannot prove the text is plain; the general path then says what is wrong.
_LEVEL4 = b'["","","",""]'
_DIGITS_DOT = b"0123456789."
_NOT_NUMBERS = b'"[]bids:'  # what separates the numbers in `...],"bids":[...`
_BRACKETS = b"[]"
_BIDS_KEY = b'"bids":'
_ASKS_AT = b'"asks":['
_BIDS_AT = b'],"bids":['
_TS_AT = b',"ts":'
_EMPTY_LEVELS = b'"asks":[],"bids":[]'
_SKELETONS: dict[int, bytes] = {}


def _skeleton(n: int) -> bytes:
    """What n levels `["px","sz","0","n"]` look like with digits and dots deleted."""
    found = _SKELETONS.get(n)
    if found is None:
        found = _SKELETONS[n] = b",".join([_LEVEL4] * n)
    return found


class PlainBooks(NamedTuple):
    """A books push read by the fast path: the message with empty level lists, the levels
    as numbers, and the raw level text (for the checksum's strings when one is sent)."""

    rest: bytes
    bid_prices: list
    bid_sizes: list
    ask_prices: list
    ask_sizes: list
    inner: bytes
    n_asks: int


def py_plain_books(raw: Any) -> PlainBooks | None:
    """(the message with empty level lists, bid prices, bid sizes, ask prices, ask sizes) of
    a compact books push in OKX's field order (asks, bids, ts, ...), or None.

    Deleting digits and dots from `"asks":[...],"bids":[...]` must leave exactly n and m
    levels `["","","",""]`: every value is then a string of digits and dots, which orjson
    reads as a number once the quotes, brackets and the "bids" key are deleted (or refuses:
    "1.2.3", ".5", "01", "", and the path declines). Prices and sizes come out as numbers
    (int when written without a dot: "3366" is 3366, equal to 3366.0 as a book key).
    """
    if type(raw) is not bytes or b"\\" in raw:
        return None
    start = raw.find(_ASKS_AT, 0, 256)
    if start < 0:
        return None
    end = raw.find(_TS_AT, start)
    if end < 0 or raw[end - 1] != 93:  # the "]" closing the bids
        return None
    inner = raw[start + len(_ASKS_AT) : end - 1]
    skeleton = inner.translate(None, _DIGITS_DOT)
    mid = skeleton.find(_BIDS_AT)
    if mid < 0:
        return None
    n_asks = (mid + 1) // 14
    n_bids = (len(skeleton) - mid - len(_BIDS_AT) + 1) // 14
    if skeleton != _skeleton(n_asks) + _BIDS_AT + _skeleton(n_bids):
        return None
    try:
        values = orjson.loads(b"[" + inner.translate(None, _NOT_NUMBERS).strip(b",") + b"]")
    except orjson.JSONDecodeError:
        return None
    split = 4 * n_asks
    if len(values) != split + 4 * n_bids:
        return None
    ask_prices, bid_prices = values[0:split:4], values[split::4]
    ask_sizes, bid_sizes = values[1:split:4], values[split + 1 :: 4]
    if 0 in ask_prices or 0 in bid_prices or not sum(values) < inf:
        return None
    rest = raw[:start] + _EMPTY_LEVELS + raw[end:]
    return PlainBooks(rest, bid_prices, bid_sizes, ask_prices, ask_sizes, inner, n_asks)


def py_plain_text(plain: PlainBooks) -> tuple[list[str], list[str]]:
    """(bid texts, ask texts): each level's `px:sz` as received, for the checksum."""
    text = plain.inner.translate(None, _BRACKETS).replace(_BIDS_KEY, b"").strip(b",")
    strings = orjson.loads(b"[" + text + b"]")  # proven plain strings: it cannot fail
    split = 4 * plain.n_asks
    asks = [p + ":" + q for p, q in zip(strings[0:split:4], strings[1:split:4], strict=True)]
    bids = [p + ":" + q for p, q in zip(strings[split::4], strings[split + 1 :: 4], strict=True)]
    return bids, asks


PlainBooksReader = Callable[[Any], PlainBooks | None]
PlainTextReader = Callable[[PlainBooks], tuple[list[str], list[str]]]


def c_plain_books_readers() -> tuple[PlainBooksReader, PlainTextReader]:
    """plain_books and plain_text in C (mdpipe/venues/_levels.c); ImportError when not built."""
    from mdpipe.venues import _levels

    read, texts, new = _levels.plain_books, _levels.plain_text, tuple.__new__

    def c_plain_books(raw: Any) -> PlainBooks | None:
        """py_plain_books in C: the same levels (all floats), or None."""
        found = read(raw)
        return None if found is None else new(PlainBooks, found)

    def c_plain_text(plain: PlainBooks) -> tuple[list[str], list[str]]:
        """py_plain_text in C."""
        return texts(plain.inner, plain.n_asks)

    return c_plain_books, c_plain_text


def _select() -> tuple[str, PlainBooksReader, PlainTextReader]:
    if os.environ.get("MDPIPE_BOOK", "").lower() != "python":
        try:
            return "c", *c_plain_books_readers()
        except ImportError:
            pass
    return "python", py_plain_books, py_plain_text


# The C readers when they are built (MDPIPE_BOOK=python forces the Python ones).
IMPLEMENTATION, plain_books, plain_text = _select()


def _trade(d: Any, inst_id: str) -> Trade:
    """One trades item: one taker order at one price (tradeId is its last fill)."""
    if type(d) is not dict:
        raise FeedError(BAD_TYPE, "trades item is not an object")
    try:
        trade_id, px, sz, side, ts = d["tradeId"], d["px"], d["sz"], d["side"], d["ts"]
    except KeyError as exc:
        raise FeedError(MISSING_FIELD, f"trades item lacks {exc.args[0]!r}") from None
    if side not in _SIDES:
        raise FeedError(BAD_TYPE, f"trade side={side!r} must be 'buy' or 'sell'")
    count = d.get("count", "1")
    if type(count) is not str or not count.isdigit() or count == "0":
        raise FeedError(BAD_TYPE, f"trade count={count!r} must be a positive integer")
    last = _ms(trade_id, "tradeId")
    first = last - int(count) + 1
    if first < 1:
        raise FeedError(BAD_NUMBER, f"trade count={count} exceeds tradeId={last}")
    time_ms = _time(ts, "ts")
    return Trade(
        inst_id,
        time_ms,
        time_ms,
        last,
        _number(px, "px"),
        _number(sz, "sz"),
        side == "sell",  # the taker sold: the buyer was the maker
        first,
        last,
        True,
        "",
    )


def _check_unkept(d: dict, channel: str) -> None:
    """FeedError if a numeric field the ticker does not keep is broken."""
    for key in _TICKER_UNSIGNED[channel]:
        raw = d.get(key, "")
        if raw != "" and raw != "0":
            _number(raw, key)
    for key in _TICKER_SIGNED[channel]:
        raw = d.get(key, "")
        if raw != "":
            _signed(raw, key)
    for key in _TICKER_TIMES[channel]:
        raw = d.get(key, "")
        if raw != "":
            _time(raw, key)


class OkxParser:
    """Turns raw frames of the public WebSocket into common events, or raises FeedError."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[str, Callable[[dict, str], Event]] = {
            BOOKS: self._books,
            BBO_TBT: self._top,
            BOOKS5: self._top,
            TRADES: self._trades,
            TICKERS: self._tickers,
            MARK_PRICE: self._tickers,
            FUNDING_RATE: self._tickers,
            OPEN_INTEREST: self._tickers,
        }

    def parse(self, raw: bytes | str) -> Event:
        """Parse one WebSocket text frame."""
        if raw == b"pong" or raw == "pong":
            return PONG
        plain = plain_books(raw)
        if plain is not None:
            ev = self._plain_books(plain)
            if ev is not None:
                return ev
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FeedError(MALFORMED_JSON, str(exc)) from None
        if type(msg) is not dict:
            raise FeedError(BAD_TYPE, "frame is not a JSON object")
        data = msg.get("data")
        if data is not None:
            arg = msg.get("arg")
            if type(arg) is not dict:
                raise FeedError(MISSING_FIELD, "data push without an 'arg' object")
            channel, inst_id = arg.get("channel"), arg.get("instId")
            if type(channel) is not str or type(inst_id) is not str:
                raise FeedError(BAD_TYPE, "arg.channel and arg.instId must be strings")
            handler = self._data.get(channel)
            if handler is None:
                raise FeedError(UNKNOWN_STREAM, f"channel {channel!r}")
            return handler(msg, inst_id)
        event = msg.get("event")
        if event is None:
            raise FeedError(MISSING_FIELD, "frame has neither 'data' nor 'event'")
        return self._event(event, msg)

    def _plain_books(self, plain: PlainBooks) -> Event | None:
        """A books push whose levels were read from the raw text; None to decode it all."""
        try:
            msg = orjson.loads(plain.rest)
        except orjson.JSONDecodeError:
            return None
        if type(msg) is not dict:
            return None
        arg, data = msg.get("arg"), msg.get("data")
        if type(arg) is not dict or arg.get("channel") != BOOKS or type(data) is not list:
            return None
        inst_id = arg.get("instId")
        if type(inst_id) is not str or not data or type(data[0]) is not dict:
            return None
        return self._books(msg, inst_id, plain)

    def _books(
        self, msg: dict, inst_id: str, plain: PlainBooks | None = None
    ) -> DepthDiff | DepthSnapshot:
        action = msg.get("action")
        d = _only_item(msg["data"], BOOKS)
        bids, asks, ts, checksum = _book_fields(d, "books data")
        seq = _seq(d, "seqId", NO_SEQ_ID)
        if plain is not None:
            bid_prices, bid_qtys = plain.bid_prices, plain.bid_sizes
            ask_prices, ask_qtys = plain.ask_prices, plain.ask_sizes
            check = OkxCheck(checksum, *plain_text(plain)) if checksum else None
        else:
            bid_prices, bid_qtys = parse_levels(bids, "bids")
            ask_prices, ask_qtys = parse_levels(asks, "asks")
            check = OkxCheck(checksum, level_text(bids), level_text(asks)) if checksum else None
        if action == "update":
            prev = _seq(d, "prevSeqId", NO_PREV)
            if seq != NO_SEQ_ID and prev == NO_PREV:
                raise FeedError(MISSING_FIELD, "books update has seqId but no prevSeqId")
            return DepthDiff(
                inst_id, ts, 0, seq, seq, prev, bid_prices, bid_qtys, ask_prices, ask_qtys, check
            )
        if action == "snapshot":
            return DepthSnapshot(
                seq, bid_prices, bid_qtys, ask_prices, ask_qtys, ts, 0, inst_id, seq, check
            )
        raise FeedError(MISSING_FIELD if action is None else BAD_TYPE, f"books action={action!r}")

    def _top(self, msg: dict, inst_id: str) -> BookTicker:
        channel = msg["arg"]["channel"]
        d = _only_item(msg["data"], channel)
        bids, asks, ts, _ = _book_fields(d, f"{channel} data")
        bid_prices, bid_qtys = parse_levels(bids[:1] if type(bids) is list else bids, "bids")
        ask_prices, ask_qtys = parse_levels(asks[:1] if type(asks) is list else asks, "asks")
        return BookTicker(
            inst_id,
            _seq(d, "seqId", NO_SEQ_ID),
            bid_prices[0] if bid_prices else 0.0,
            bid_qtys[0] if bid_qtys else 0.0,
            ask_prices[0] if ask_prices else 0.0,
            ask_qtys[0] if ask_qtys else 0.0,
            ts,
            0,
        )

    def _tickers(self, msg: dict, inst_id: str) -> Ticker:
        """tickers, mark-price, funding-rate or open-interest: the ticker fields it carries."""
        channel = msg["arg"]["channel"]
        d = _only_item(msg["data"], channel)
        values: dict[str, float] = {}
        try:
            ts = _time(d["ts"], "ts")
            for key, name in _TICKER_KEYS[channel]:
                raw = d[key]
                if raw != "":
                    values[name] = _number(raw, key) if raw != "0" else 0.0
            if channel == TICKERS and not inst_id.endswith("-SWAP") and d["volCcy24h"] != "":
                values["quote_volume_24h"] = _number(d["volCcy24h"], "volCcy24h")
            if channel == FUNDING_RATE:
                values["funding_rate"] = _signed(d["fundingRate"], "fundingRate")
                values["next_funding_ts_ns"] = _time(d["fundingTime"], "fundingTime") * 1_000_000
        except KeyError as exc:
            raise FeedError(MISSING_FIELD, f"{channel} data lacks {exc.args[0]!r}") from None
        _check_unkept(d, channel)
        return Ticker(inst_id, ts, values)

    def _trades(self, msg: dict, inst_id: str) -> Trade | Trades:
        data = msg["data"]
        if type(data) is not list or not data:
            raise FeedError(BAD_TYPE, "trades data must be a non-empty list")
        if len(data) == 1:
            return _trade(data[0], inst_id)
        return Trades([_trade(d, inst_id) for d in data])

    def _event(self, event: Any, msg: dict) -> Event:
        rid = str(msg.get("id", ""))
        if event in ("subscribe", "unsubscribe"):
            return Ack(rid, True, "", event)
        if event == "error":
            code, text = str(msg.get("code", "")), str(msg.get("msg", ""))
            return Ack(rid, False, describe_error(code, text), "")
        if event == "notice":
            code = str(msg.get("code", ""))
            if code == UPGRADE_NOTICE:
                return ServerShutdown(0)
            return Alive(f"notice {code}: {msg.get('msg', '')}")
        if event == "channel-conn-count":
            return Alive(f"channel-conn-count {msg.get('channel', '')}={msg.get('connCount', '')}")
        raise FeedError(UNKNOWN_EVENT, f"event {event!r}")


def parse_rest_books(raw: bytes | str) -> DepthSnapshot:
    """A `GET /api/v5/market/books` answer (no checksum on REST); a non-zero code raises."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FeedError(MALFORMED_JSON, str(exc)) from None
    if type(msg) is not dict:
        raise FeedError(BAD_TYPE, "REST books answer is not a JSON object")
    code = msg.get("code")
    if code != "0":
        raise FeedError(BAD_TYPE, f"REST books answered code={code!r}: {msg.get('msg', '')}")
    d = _only_item(msg.get("data"), "REST books")
    bids, asks, ts, _ = _book_fields(d, "REST books data")
    seq = d.get("seqId")
    if type(seq) is str and seq.isdigit():
        seq = int(seq)
    if type(seq) is not int or seq < 0:
        raise FeedError(MISSING_FIELD if seq is None else BAD_TYPE, f"REST books seqId={seq!r}")
    bid_prices, bid_qtys = parse_levels(bids, "bids")
    ask_prices, ask_qtys = parse_levels(asks, "asks")
    return DepthSnapshot(seq, bid_prices, bid_qtys, ask_prices, ask_qtys, ts, 0, "", seq)
