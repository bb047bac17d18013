"""OKX v5 public frames to the common events: a strict parser that trusts no value unchecked.

- `books` update -> DepthDiff: first_id = last_id = seqId (NO_SEQ_ID when the message has
  none), prev_id = prevSeqId (-1 when none), event_time = ts; `check` holds an OkxCheck
  (the checksum and each level's raw `px:sz` text) when the checksum is non-zero.
- `books` snapshot -> DepthSnapshot with its symbol (in-band), same ids and check.
- `bbo-tbt` / `books5` -> BookTicker (update_id = seqId): the venue's own top of book.
- `trades` -> Trade: trade_id = tradeId (the last fill), first_trade_id = tradeId - count + 1,
  buyer_is_maker = the taker sold. OKX pushes one trade (one taker order at one price) per
  message; a push holding several is refused whole (dead-lettered, never half used).
- text `pong` -> Alive; subscribe/unsubscribe acks -> Ack; `{"event":"error"}` -> Ack with
  ok False and the code explained; notice 64008 -> ServerShutdown (reconnect before the cut).

Every malformed input raises FeedError with a short kind. Levels are `[px, sz, "0",
orders]`: only px and sz are read (the third field is deprecated, the fourth an order count).
"""

from __future__ import annotations

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
    Trade,
)
from mdpipe.venues.errors import (
    BAD_NUMBER,
    BAD_TYPE,
    MALFORMED_JSON,
    MISSING_FIELD,
    UNKNOWN_EVENT,
    UNKNOWN_STREAM,
    FeedError,
)
from mdpipe.venues.okx.protocol import (
    BBO_TBT,
    BOOKS,
    BOOKS5,
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
        if px.translate(_PLAIN) or sz.translate(_PLAIN) or not px or not sz:
            return FeedError(BAD_NUMBER, f"{side} level {level!r} is not a plain decimal")
        if float(px) == 0.0:
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
    return int(value)


def _seq(d: dict, key: str, absent: int) -> int:
    value = d.get(key)
    if value is None:
        return absent
    if type(value) is not int:
        raise FeedError(BAD_TYPE, f"{key}={value!r} must be an integer")
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
    return bids, asks, _ms(ts, "ts"), checksum


class OkxParser:
    """Turns raw frames of the public WebSocket into common events, or raises FeedError."""

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

    def _books(self, msg: dict, inst_id: str) -> DepthDiff | DepthSnapshot:
        action = msg.get("action")
        d = _only_item(msg["data"], BOOKS)
        bids, asks, ts, checksum = _book_fields(d, "books data")
        seq = _seq(d, "seqId", NO_SEQ_ID)
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

    def _trades(self, msg: dict, inst_id: str) -> Trade:
        d = _only_item(msg["data"], TRADES)
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
        time_ms = _ms(ts, "ts")
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
