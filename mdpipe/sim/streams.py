"""Stream names, WebSocket routes, and which route delivers which stream."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from mdpipe.sim.instruments import FUTURES
from mdpipe.sim.rolling import KLINE_INTERVALS_MS

MAX_STREAMS = 1024

# Routes a connection can be on. A futures connection delivers only its route's half of
# the streams (the 2026 URL split); ROUTE_ALL is spot and the raw /ws compatibility path.
ROUTE_ALL = "all"
ROUTE_PUBLIC = "public"
ROUTE_MARKET = "market"

DEPTH = "depth"
PARTIAL = "partial"
BOOK_TICKER = "bookTicker"
TRADE = "trade"
AGG_TRADE = "aggTrade"
MARK_PRICE = "markPrice"
DAY_TICKER = "ticker"
KLINE = "kline"
DAY_TICKER_MS = 1000  # `<s>@ticker` pushes once a second
KLINE_PUSH_MS = 250  # an open kline is pushed every 250 ms (futures; spot 1-2 s)

# Update speed of each depth stream suffix, in ms; 0 is the per-event futures stream.
_DEPTH_SPEEDS = {
    FUTURES: {"": 250, "@500ms": 500, "@100ms": 100, "@0ms": 0},
    "spot": {"": 1000, "@100ms": 100},
}
_PARTIAL_SPEEDS = {
    FUTURES: {"": 250, "@500ms": 500, "@100ms": 100},
    "spot": {"": 1000, "@100ms": 100},
}
_MARK_SPEEDS = {"": 3000, "@1s": 1000}
_KLINE = re.compile(r"^([a-z0-9_]+)@kline_(\w+)$")
_NAME = re.compile(r"^([a-z0-9_]+)@([A-Za-z]+)(\d*)(@\w+)?$")


@dataclass(frozen=True)
class StreamKey:
    """A parsed synthetic-mode stream name."""

    name: str
    symbol: str  # upper case, as in payloads
    kind: str
    interval_ms: int = 0
    levels: int = 0
    kline: str = ""  # a kline stream's interval, e.g. "1m"


def parse_stream(name: str, market: str) -> StreamKey | None:
    """Parse a stream name valid on `market`, or None if the exchange has no such stream."""
    k = _KLINE.match(name)
    if k:
        interval = k.group(2)
        if interval not in KLINE_INTERVALS_MS or (market == FUTURES and interval == "1s"):
            return None
        return StreamKey(name, k.group(1).upper(), KLINE, KLINE_PUSH_MS, 0, interval)
    m = _NAME.match(name)
    if not m:
        return None
    sym, kind, digits, suffix = m.group(1), m.group(2), m.group(3), m.group(4) or ""
    symbol = sym.upper()
    if kind == "depth" and not digits:
        speed = _DEPTH_SPEEDS[market].get(suffix)
        return None if speed is None else StreamKey(name, symbol, DEPTH, speed)
    if kind == "depth" and digits in ("5", "10", "20"):
        speed = _PARTIAL_SPEEDS[market].get(suffix)
        return None if speed is None else StreamKey(name, symbol, PARTIAL, speed, int(digits))
    if digits:
        return None
    if kind in (BOOK_TICKER, TRADE, AGG_TRADE) and not suffix:
        return StreamKey(name, symbol, kind)
    if kind == DAY_TICKER and not suffix:
        return StreamKey(name, symbol, DAY_TICKER, DAY_TICKER_MS)
    if kind == MARK_PRICE and market == FUTURES and suffix in _MARK_SPEEDS:
        return StreamKey(name, symbol, MARK_PRICE, _MARK_SPEEDS[suffix])
    return None


def depth_stream_name(symbol: str, market: str, interval_ms: int, levels: int = 0) -> str:
    """The stream name of a diff (levels=0) or partial depth stream at a given speed."""
    speeds = _PARTIAL_SPEEDS[market] if levels else _DEPTH_SPEEDS[market]
    suffix = next(s for s, ms in speeds.items() if ms == interval_ms)
    return f"{symbol.lower()}@depth{levels or ''}{suffix}"


def stream_route(name: str) -> str:
    """The futures route that carries a stream: depth and bookTicker are 'public' data."""
    kind = name.partition("@")[2]
    if kind.startswith("depth") or kind.startswith("bookTicker"):
        return ROUTE_PUBLIC
    return ROUTE_MARKET


def route_delivers(route: str, name: str) -> bool:
    """Whether a connection on `route` ever receives stream `name`."""
    return route == ROUTE_ALL or stream_route(name) == route


@dataclass(frozen=True)
class WsRoute:
    """A WebSocket path: envelope or raw payloads, which route, initial streams."""

    combined: bool
    route: str
    streams: tuple[str, ...]


def parse_ws_path(market: str, path: str, query: str) -> WsRoute | None:
    """Map a request path to a WebSocket route of `market`, or None if it is not one."""
    if market == FUTURES:
        combined_routes = {"/public/stream": ROUTE_PUBLIC, "/market/stream": ROUTE_MARKET}
        raw_prefixes = {"/public/ws": ROUTE_PUBLIC, "/market/ws": ROUTE_MARKET, "/ws": ROUTE_ALL}
    else:
        combined_routes = {"/stream": ROUTE_ALL}
        raw_prefixes = {"/ws": ROUTE_ALL}
    if path in combined_routes:
        values = parse_qs(query, keep_blank_values=True).get("streams", [""])
        streams = tuple(s for s in values[0].split("/") if s)
        return WsRoute(True, combined_routes[path], streams)
    for prefix, route in raw_prefixes.items():
        if path == prefix or path.startswith(prefix + "/"):
            streams = tuple(s for s in path[len(prefix) :].split("/") if s)
            return WsRoute(False, route, streams)
    return None
