"""OKX v5 public frames to events: a strict parser that never trusts a value unchecked.

Every malformed input raises `FeedError` with a short kind (counted and dead-lettered by
the caller). Levels are `[px, sz, "0", orders]`; only px and sz are read (the third field
is deprecated and the fourth is an order count, never a size).
"""

from __future__ import annotations

from collections.abc import Callable
from math import inf
from typing import Any

import orjson

from mdpipe.feeds.errors import (
    BAD_NUMBER,
    BAD_TYPE,
    MALFORMED_JSON,
    MISSING_FIELD,
    UNKNOWN_EVENT,
    UNKNOWN_STREAM,
    FeedError,
)
from mdpipe.venues.okx.events import (
    PONG,
    SNAPSHOT,
    UPDATE,
    BookMessage,
    ErrorEvent,
    Event,
    Notice,
    Subscribed,
    TopOfBook,
    Trade,
    Trades,
)
from mdpipe.venues.okx.protocol import BBO_TBT, BOOKS, BOOKS5, TRADES

# What is left of a level's "px:sz" text after deleting these must be nothing: digits and
# one dot per number only (no sign, exponent, NaN, inf, underscore or space).
_NUMERIC = str.maketrans("", "", "0123456789.:")
_LIST_ONLY = {list}
_ACTIONS = (SNAPSHOT, UPDATE)
_SIDES = ("buy", "sell")


def _bad_levels(levels: Any, side: str) -> FeedError:
    """Say what is wrong with a level list that was refused."""
    if type(levels) is not list:
        return FeedError(BAD_TYPE, f"{side} is {type(levels).__name__}, not a list")
    for level in levels:
        if type(level) is not list or len(level) < 2:
            return FeedError(BAD_TYPE, f"{side} level {level!r} is not a [px, sz, ...] list")
        px, sz = level[0], level[1]
        if type(px) is not str or type(sz) is not str:
            return FeedError(BAD_TYPE, f"{side} level {level!r}: px and sz must be strings")
        if (px + ":" + sz).translate(_NUMERIC) or px.count(".") > 1 or sz.count(".") > 1:
            return FeedError(BAD_NUMBER, f"{side} level {level!r} is not a plain decimal")
        if float(px) == 0.0:
            return FeedError(BAD_NUMBER, f"{side} level {level!r} has price 0")
    return FeedError(BAD_NUMBER, f"{side} levels out of range")


def parse_levels(levels: Any, side: str) -> tuple[list[float], list[float], list[str]]:
    """(prices, sizes, "px:sz" texts) of a level list, every value checked.

    Prices > 0 and sizes >= 0, finite, written as plain decimals; anything else raises.
    """
    if type(levels) is not list:
        raise _bad_levels(levels, side)
    if not levels:
        return [], [], []
    try:
        texts = [lv[0] + ":" + lv[1] for lv in levels]
        prices = [float(lv[0]) for lv in levels]
        qtys = [float(lv[1]) for lv in levels]
    except (TypeError, ValueError, IndexError, KeyError):
        raise _bad_levels(levels, side) from None
    joined = "".join(texts)
    if (
        joined.translate(_NUMERIC)
        or 0.0 in prices
        or not sum(prices) + sum(qtys) < inf
        or set(map(type, levels)) != _LIST_ONLY
    ):
        raise _bad_levels(levels, side)
    return prices, qtys, texts


def _ms(value: Any, name: str) -> int:
    """A millisecond timestamp sent as a decimal string."""
    if type(value) is not str or not value.isdigit() or not value.isascii():
        raise FeedError(BAD_TYPE, f"{name}={value!r} must be a string of digits")
    return int(value)


def _opt_int(d: dict, key: str) -> int | None:
    value = d.get(key)
    if value is None or type(value) is int:
        return value
    raise FeedError(BAD_TYPE, f"{key}={value!r} must be an integer")


def _number(value: Any, name: str, allow_zero: bool) -> float:
    if type(value) is not str or value.translate(_NUMERIC) or value.count(".") > 1 or not value:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is not a plain decimal string")
    number = float(value)
    if not (number > 0.0 or (allow_zero and number == 0.0)) or number == inf:
        raise FeedError(BAD_NUMBER, f"{name}={value!r} is out of range")
    return number


def _only_item(data: Any, channel: str) -> dict:
    if type(data) is not list or len(data) != 1 or type(data[0]) is not dict:
        raise FeedError(BAD_TYPE, f"{channel} data must be a list of one object")
    return data[0]


def book_message(d: dict, inst_id: str, action: str) -> BookMessage:
    """A BookMessage from a `books` data item (or a REST books answer item)."""
    try:
        bids, asks, ts = d["bids"], d["asks"], d["ts"]
    except KeyError as exc:
        raise FeedError(MISSING_FIELD, f"books data lacks {exc.args[0]!r}") from None
    seq_id = _opt_int(d, "seqId")
    prev = _opt_int(d, "prevSeqId")
    checksum = d.get("checksum", 0)
    if type(checksum) is not int:
        raise FeedError(BAD_TYPE, f"checksum={checksum!r} must be an integer")
    if action == UPDATE and seq_id is not None and prev is None:
        raise FeedError(MISSING_FIELD, "books update has seqId but no prevSeqId")
    bid_prices, bid_qtys, bid_text = parse_levels(bids, "bids")
    ask_prices, ask_qtys, ask_text = parse_levels(asks, "asks")
    return BookMessage(
        inst_id,
        action,
        _ms(ts, "ts"),
        seq_id,
        prev,
        checksum,
        bid_prices,
        bid_qtys,
        ask_prices,
        ask_qtys,
        bid_text,
        ask_text,
    )


class OkxParser:
    """Turns raw frames of the public WebSocket into events, or raises FeedError."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[str, Callable[[dict, str], Event]] = {
            BOOKS: self._books,
            BBO_TBT: self._top,
            BOOKS5: self._top,
            TRADES: self._trades,
        }

    def parse(self, raw: bytes | str) -> Event:
        """Parse one WebSocket text frame."""
        if raw == b"pong" or raw == "pong":
            return PONG
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FeedError(MALFORMED_JSON, str(exc)) from None
        if type(msg) is not dict:
            raise FeedError(BAD_TYPE, "frame is not a JSON object")
        if "data" in msg:
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

    def _books(self, msg: dict, inst_id: str) -> BookMessage:
        action = msg.get("action")
        if action not in _ACTIONS:
            raise FeedError(
                MISSING_FIELD if action is None else BAD_TYPE, f"books action={action!r}"
            )
        return book_message(_only_item(msg["data"], BOOKS), inst_id, action)

    def _top(self, msg: dict, inst_id: str) -> TopOfBook:
        channel = msg["arg"]["channel"]
        d = _only_item(msg["data"], channel)
        try:
            bids, asks, ts = d["bids"], d["asks"], d["ts"]
        except KeyError as exc:
            raise FeedError(MISSING_FIELD, f"{channel} data lacks {exc.args[0]!r}") from None
        bid_prices, bid_qtys, _ = parse_levels(bids[:1] if type(bids) is list else bids, "bids")
        ask_prices, ask_qtys, _ = parse_levels(asks[:1] if type(asks) is list else asks, "asks")
        return TopOfBook(
            inst_id,
            channel,
            _ms(ts, "ts"),
            _opt_int(d, "seqId"),
            bid_prices[0] if bid_prices else 0.0,
            bid_qtys[0] if bid_qtys else 0.0,
            ask_prices[0] if ask_prices else 0.0,
            ask_qtys[0] if ask_qtys else 0.0,
        )

    def _trades(self, msg: dict, inst_id: str) -> Trades:
        data = msg["data"]
        if type(data) is not list or not data:
            raise FeedError(BAD_TYPE, "trades data must be a non-empty list")
        items = []
        for d in data:
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
            items.append(
                Trade(
                    inst_id,
                    _ms(trade_id, "tradeId"),
                    _number(px, "px", False),
                    _number(sz, "sz", False),
                    side,
                    _ms(ts, "ts"),
                    int(count),
                    _opt_int(d, "seqId"),
                )
            )
        return Trades(inst_id, items)

    def _event(self, event: Any, msg: dict) -> Event:
        conn_id = msg.get("connId", "")
        rid = msg.get("id", "")
        if event in ("subscribe", "unsubscribe"):
            arg = msg.get("arg")
            if type(arg) is not dict:
                raise FeedError(MISSING_FIELD, f"{event} ack without an 'arg' object")
            return Subscribed(
                event, str(arg.get("channel", "")), str(arg.get("instId", "")), str(rid), conn_id
            )
        if event == "error":
            return ErrorEvent(str(msg.get("code", "")), str(msg.get("msg", "")), str(rid), conn_id)
        if event == "notice":
            return Notice(str(msg.get("code", "")), str(msg.get("msg", "")), conn_id)
        if event == "channel-conn-count":
            return Notice(event, str(msg.get("connCount", "")), conn_id)
        raise FeedError(UNKNOWN_EVENT, f"event {event!r}")


def parse_rest_books(raw: bytes | str, inst_id: str) -> BookMessage:
    """A `GET /api/v5/market/books` answer as a snapshot BookMessage (no checksum on REST).

    A non-zero `code` raises FeedError naming it; `seqId` may come as an int or a string.
    """
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
    seq = d.get("seqId")
    if type(seq) is str and seq.isdigit():
        d = {**d, "seqId": int(seq)}
    if d.get("seqId") is None:
        raise FeedError(MISSING_FIELD, "REST books answer lacks 'seqId'")
    d = {k: v for k, v in d.items() if k != "prevSeqId"}
    return book_message(d, inst_id, SNAPSHOT)
