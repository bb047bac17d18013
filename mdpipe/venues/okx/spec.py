"""OKX's `[[feeds]]` keys: markets, defaults per market, and the checks config runs."""

from __future__ import annotations

import re
from typing import Any

from mdpipe.venues.okx.protocol import REST_BOOKS_MAX_SZ

MARKETS = ("swap", "spot")
BOOK_STARTS = ("snapshot", "rest")

_COMMON = {
    "ws_url": "wss://ws.okx.com:8443",
    "rest_url": "https://openapi.okx.com",
    "depth_stream": "books",
    "trade_stream": "trades",
    "snapshot_limit": REST_BOOKS_MAX_SZ,
    "book_start": "snapshot",
    # OKX documents no periodic cut; the 64008 notice triggers a make-before-break rollover.
    "rollover_after": 0.0,
}
DEFAULTS: dict[str, dict[str, Any]] = {"swap": dict(_COMMON), "spot": dict(_COMMON)}
_INST_ID = re.compile(r"^[A-Z0-9]{1,15}-[A-Z0-9]{1,15}(-SWAP)?$")


def check_symbol(symbol: str) -> str | None:
    """What is wrong with a symbol's form on OKX, or None."""
    if not _INST_ID.match(symbol):
        return f"{symbol!r} is not an OKX instId like BTC-USDT-SWAP (swap) or BTC-USDT (spot)"
    return None


def check_feed(feed: Any, depth: int) -> tuple[str, str] | None:
    """(key, problem) of the first OKX-specific key that is wrong, or None."""
    for sym in feed.symbols:
        if sym.endswith("-SWAP") != (feed.market == "swap"):
            form = "BTC-USDT-SWAP" if feed.market == "swap" else "BTC-USDT"
            return "symbols", f"{sym} is not an OKX {feed.market} instId like {form}"
    if feed.depth_stream != "books":
        return "depth_stream", f"{feed.depth_stream!r}: OKX books are read from 'books'"
    if feed.trade_stream != "trades":
        return "trade_stream", f"{feed.trade_stream!r}: OKX trades are read from 'trades'"
    limit = feed.snapshot_limit
    if not 1 <= limit <= REST_BOOKS_MAX_SZ:
        return "snapshot_limit", f"{limit} is outside 1..{REST_BOOKS_MAX_SZ} (REST books sz)"
    if limit < depth:
        return "snapshot_limit", f"{limit} is less than shm.depth {depth}"
    start = getattr(feed, "book_start", "snapshot")
    if start not in BOOK_STARTS:
        return "book_start", f"{start!r} must be one of {BOOK_STARTS}"
    return None
