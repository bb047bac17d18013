"""Binance's `[[feeds]]` keys: markets, defaults per market, and the checks config runs."""

from __future__ import annotations

import re
from typing import Any

MARKETS = ("futures", "spot")
FUTURES_SNAPSHOT_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
SPOT_SNAPSHOT_MAX = 5000
TRADE_STREAMS = ("trade", "aggTrade")

_COMMON = {
    "depth_stream": "depth@100ms",
    "trade_stream": "aggTrade",
    "snapshot_limit": 1000,
    "rollover_after": 82_800.0,  # the exchange cuts every connection at 24 h
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "futures": {
        "ws_url": "wss://fstream.binance.com",
        "rest_url": "https://fapi.binance.com",
        **_COMMON,
    },
    "spot": {
        "ws_url": "wss://stream.binance.com:9443",
        "rest_url": "https://api.binance.com",
        **_COMMON,
    },
}
_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")


def check_symbol(symbol: str) -> str | None:
    """What is wrong with a symbol's form on Binance, or None."""
    if not _SYMBOL.match(symbol):
        return f"{symbol!r} is not an upper-case Binance symbol like BTCUSDT"
    return None


def check_feed(feed: Any, depth: int) -> tuple[str, str] | None:
    """(key, problem) of the first Binance-specific key that is wrong, or None."""
    if not re.fullmatch(r"depth(@\d+ms)?", feed.depth_stream):
        return "depth_stream", f"{feed.depth_stream!r} is not a depth stream like depth@100ms"
    if feed.trade_stream not in TRADE_STREAMS:
        return "trade_stream", "must be 'trade' or 'aggTrade'"
    limit = feed.snapshot_limit
    if feed.market == "futures" and limit not in FUTURES_SNAPSHOT_LIMITS:
        return "snapshot_limit", f"{limit} is not one of {FUTURES_SNAPSHOT_LIMITS}"
    if feed.market == "spot" and not 1 <= limit <= SPOT_SNAPSHOT_MAX:
        return "snapshot_limit", f"{limit} is outside 1..{SPOT_SNAPSHOT_MAX}"
    if limit < depth:
        return "snapshot_limit", f"{limit} is less than shm.depth {depth}"
    return None
