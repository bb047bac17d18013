"""Bybit's `[[feeds]]` keys: markets, defaults per market, and the checks config runs."""

from __future__ import annotations

import re
from typing import Any

MARKETS = ("linear", "spot")
# orderbook.1 is the venue's top of book (snapshots only): the ground truth, not a book.
BOOK_DEPTHS = (50, 200, 1000)
_COMMON = {
    "ws_url": "wss://stream.bybit.com",
    "rest_url": "https://api.bybit.com",
    "depth_stream": "orderbook.50",
    "trade_stream": "publicTrade",
    "snapshot_limit": 50,
    "rollover_after": 0.0,  # Bybit cuts no connection on a schedule
    "silence_timeout": 30.0,  # longer than the 20 s ping, whose pong proves the route alive
}
DEFAULTS: dict[str, dict[str, Any]] = {"linear": dict(_COMMON), "spot": dict(_COMMON)}
_SYMBOL = re.compile(r"^[A-Z0-9]{2,25}$")


def check_symbol(symbol: str) -> str | None:
    """What is wrong with a symbol's form on Bybit, or None."""
    if not _SYMBOL.match(symbol):
        hint = " ('-' is OKX's form)" if "-" in symbol else ""
        return f"{symbol!r} is not an upper-case Bybit symbol like BTCUSDT{hint}"
    return None


def book_depth(depth_stream: str) -> int | None:
    """50 for 'orderbook.50'; None if it is not a book stream Bybit serves."""
    m = re.fullmatch(r"orderbook\.(\d+)", depth_stream)
    if m is None or int(m.group(1)) not in BOOK_DEPTHS:
        return None
    return int(m.group(1))


def check_feed(feed: Any, depth: int) -> tuple[str, str] | None:
    """(key, problem) of the first Bybit-specific key that is wrong, or None."""
    levels = book_depth(feed.depth_stream)
    if levels is None:
        names = ", ".join(f"orderbook.{d}" for d in BOOK_DEPTHS)
        return "depth_stream", f"{feed.depth_stream!r} is not a Bybit book stream ({names})"
    if levels < depth:
        return "depth_stream", f"{feed.depth_stream} keeps fewer levels than shm.depth {depth}"
    if feed.trade_stream != "publicTrade":
        return "trade_stream", f"{feed.trade_stream!r}: Bybit's trade stream is 'publicTrade'"
    if feed.rollover_after:
        return "rollover_after", "must be 0 on bybit (no scheduled cut to roll over before)"
    return None
