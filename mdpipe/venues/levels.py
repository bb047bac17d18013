"""Price levels from exchange JSON: [["price", "qty"], ...] decimal strings to checked floats.

Two ways in, same result. `parse_levels` takes an already decoded list and checks every value
(the general path). `plain_levels` reads the levels straight from the raw text of a compact
message and declines (returns None) whenever it cannot prove the text is plain: then the
caller decodes the message and takes the general path, which also says precisely what is
wrong. Prices come out > 0, quantities >= 0, all finite floats.

`plain_levels` is the C reader (mdpipe/venues/_levels.c: one pass over the bytes, each value
the double float() gives) when it is built, else `py_plain_levels` (a handful of C calls:
byte translations and one orjson call); MDPIPE_BOOK=python forces the Python one.

Measured on the futures tape (~68 levels per diff), CPU time per diff: orjson.loads plus a
float() per value ~13 µs before any check, ~20 µs with the general path's checks,
py_plain_levels ~9.5 µs (quiet machine). In one run on a machine loaded ~5 jobs on 2 cores:
C 17.1 µs, py_plain_levels 32.0 µs; much of the C time is making the 136 float objects and
four lists the events carry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import chain
from math import inf, isfinite
from typing import Any, NamedTuple

import orjson

from mdpipe.venues.errors import BAD_NUMBER, BAD_TYPE, FeedError

Floats = list[float]

# Digits are deleted from a plain level's text; what is left of each level is this.
_DIGITS = b"0123456789"
_LEVEL = b',[".","."]'
_LIST_ONLY = {list}


class Layout(NamedTuple):
    """Where a message keeps its levels: `<bids>[...],<asks>[...]<tail>` ends the text.

    The tail is compared with its digits deleted, so it may hold integer fields: Bybit's
    `,"u":4101,"seq":9100231},"cts":1750000000137}` is the tail `,"u":,"seq":},"cts":}`.
    """

    bids: bytes  # e.g. b'"b":'
    asks: bytes  # e.g. b'"a":'
    tail: bytes  # what closes the message after the asks, e.g. b"}}" for an envelope


DIFF_IN_ENVELOPE = Layout(b'"b":', b'"a":', b"}}")
SNAPSHOT = Layout(b'"bids":', b'"asks":', b"}")
BYBIT_BOOK = Layout(b'"b":', b'"a":', b',"u":,"seq":},"cts":}')


class PlainLevels(NamedTuple):
    """Levels read from raw text; `rest` is the message with its level lists replaced by 0,
    for orjson to read the other fields from."""

    rest: bytes
    bid_prices: Floats
    bid_qtys: Floats
    ask_prices: Floats
    ask_qtys: Floats


def py_plain_levels(raw: Any, layout: Layout) -> PlainLevels | None:
    """The levels of a compact message whose every value is a decimal string with one dot.

    Deleting the digits from the text from `<bids>[` to the end must leave exactly
    `<bids>[[".","."],...],<asks>[[".","."],...]<tail>`: that proves every level is a pair of
    strings holding only digits and one dot (no sign, exponent, NaN, inf, escape, nor any
    other key or value). The strings then are JSON numbers with a fraction, so orjson reads
    them as floats, correctly rounded like float(): one orjson call reads them all, with no
    string or list object per value. Returns None when any of this fails, or on a zero price.
    """
    if (type(raw) is not bytes and type(raw) is not bytearray) or b"\\" in raw:
        return None  # str input, or an escape that could hide a quote inside the head
    bids_key, asks_key, tail = layout
    start = raw.find(bids_key + b"[", 0, 1024)
    if start < 0:
        return None
    skeleton = raw[start:].translate(None, _DIGITS)
    open_bids = len(bids_key) + 1
    mid = skeleton.find(b"]," + asks_key + b"[", open_bids)
    end = len(skeleton) - len(tail) - 1
    if mid < 0 or skeleton[end:] != b"]" + tail:
        return None
    open_asks = mid + len(asks_key) + 3
    n_bids = (mid - open_bids + 1) // 10
    n_asks = (end - open_asks + 1) // 10
    if (
        skeleton[open_bids:mid] != (_LEVEL * n_bids)[1:]
        or skeleton[open_asks:end] != (_LEVEL * n_asks)[1:]
    ):
        return None
    # Where the asks end in the raw text (the tail's integers still hold their digits).
    head = tail.partition(b":")[0]
    raw_end = raw.rfind(b"]" + head) + 1
    if raw_end <= start:
        return None
    # Without keys, quotes and brackets the levels are one flat list of numbers, bids first.
    text = raw[start:raw_end].translate(None, _key_bytes(layout))
    try:
        values = orjson.loads(b"[" + text.strip(b",") + b"]")
    except orjson.JSONDecodeError:
        return None  # "1." or ".5" or "01.5", or a number too large for a float
    split = 2 * n_bids
    bid_prices = values[0:split:2]
    ask_prices = values[split::2]
    if 0.0 in bid_prices or 0.0 in ask_prices:
        return None
    rest = raw[:start] + bids_key + b"0," + asks_key + b"0" + raw[raw_end:]
    return PlainLevels(rest, bid_prices, values[1:split:2], ask_prices, values[split + 1 :: 2])


def c_plain_levels_reader() -> Callable[[Any, Layout], PlainLevels | None]:
    """plain_levels in C (mdpipe/venues/_levels.c); ImportError when it is not built."""
    from mdpipe.venues import _levels

    read, new = _levels.plain_levels, tuple.__new__

    def c_plain_levels(raw: Any, layout: Layout) -> PlainLevels | None:
        """py_plain_levels in C: the same levels, or None (it may decline more: it also
        refuses digits outside the strings, which the text deletion would have joined)."""
        found = read(raw, *layout)
        return None if found is None else new(PlainLevels, found)

    return c_plain_levels


def _select() -> tuple[str, Callable[[Any, Layout], PlainLevels | None]]:
    if os.environ.get("MDPIPE_BOOK", "").lower() != "python":
        try:
            return "c", c_plain_levels_reader()
        except ImportError:
            pass
    return "python", py_plain_levels


# The C reader when it is built (MDPIPE_BOOK=python forces py_plain_levels): both return the
# same levels, or None where the general path must say what is wrong.
IMPLEMENTATION, plain_levels = _select()


_KEY_BYTES: dict[Layout, bytes] = {}


def _key_bytes(layout: Layout) -> bytes:
    """Bytes to delete so the level text becomes `p,q,p,q,...` (keys, quotes, brackets)."""
    found = _KEY_BYTES.get(layout)
    if found is None:
        found = _KEY_BYTES[layout] = bytes(sorted(set(layout.bids + layout.asks + b'"[]')))
    return found


def explain_levels(levels: Any, side: str) -> FeedError:
    """Say precisely what is wrong with a level list that was refused."""
    if type(levels) is not list:
        return FeedError(BAD_TYPE, f"{side} is {type(levels).__name__}, not a list")
    for level in levels:
        if type(level) is not list or len(level) != 2:
            return FeedError(BAD_TYPE, f"{side} level {level!r} is not a [price, qty] pair")
        for value in level:
            if type(value) is not str:
                return FeedError(BAD_TYPE, f"{side} level {level!r} holds a non-string")
            try:
                number = float(value)
            except ValueError:
                return FeedError(BAD_NUMBER, f"{side} level {level!r} is not numeric")
            if not isfinite(number) or number < 0:
                return FeedError(BAD_NUMBER, f"{side} level {level!r} is not finite and >= 0")
        if float(level[0]) == 0:
            return FeedError(BAD_NUMBER, f"{side} level {level!r} has price 0")
    return FeedError(BAD_NUMBER, f"{side} levels out of range")


def parse_levels(levels: Any, side: str = "levels") -> tuple[Floats, Floats]:
    """Decoded [price, qty] decimal-string pairs as (prices, qtys), every value checked.

    Prices must be > 0 and quantities >= 0, both finite; anything else raises FeedError.
    The checks are whole-list C calls, not per-level code.
    """
    if type(levels) is not list:
        raise explain_levels(levels, side)
    prices: list[float] = []
    qtys: list[float] = []
    add_price = prices.append
    add_qty = qtys.append
    try:
        for price, qty in levels:
            add_price(float(price))
            add_qty(float(qty))
        # Every value a string (float() also takes numbers and booleans); one join checks all.
        text = "".join(chain.from_iterable(levels))
    except (TypeError, ValueError):
        raise explain_levels(levels, side) from None
    # No '-' means nothing negative; the sum is NaN or inf if any value is; a two-character
    # string or a two-key object unpacks like a pair, so only lists are levels.
    if prices and (
        "-" in text
        or 0.0 in prices
        or not sum(prices) + sum(qtys) < inf
        or set(map(type, levels)) != _LIST_ONLY
    ):
        raise explain_levels(levels, side)
    return prices, qtys
