"""Redis channel, key and stream names of one (venue, symbol), shared by publisher and consumers.

A venue is a ring's `exchange` field: "binance-futures", "bybit-linear", "okx-spot", ...
An instance whose config names one venue keeps the plain names (`orderbook:BTCUSDT`); every
other venue's names carry it in front of the symbol (`orderbook:bybit-linear:BTCUSDT`), so one
symbol name on two venues never shares a channel or key. On a Redis Cluster the symbol part
is a hash tag (`orderbook:{BTCUSDT}`, `orderbook:{bybit-linear:BTCUSDT}`): every name of one
symbol lives in one slot, so its key, channel and streams are written over one connection, in
order. Templates that name {exchange} or {market} themselves get no venue segment.

The publisher lists every (venue, symbol) it carries, with its names, in the hash
DIRECTORY_KEY (field "venue:symbol", value the JSON of SymbolNames), so a consumer looks names
up instead of guessing the instance's configuration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

DIRECTORY_KEY = "mdpipe:symbols"


@dataclass(frozen=True)
class Templates:
    """Name templates from the publisher config; {symbol}, {exchange}, {market} are filled in."""

    orderbook: str = "orderbook:{symbol}"
    trades: str = "trades:{symbol}"
    market_data: str = "market_data:{symbol}"
    orderbook_stream: str = "orderbook_stream:{symbol}"
    trades_stream: str = "trades_stream:{symbol}"
    funding: str = "funding:{symbol}"
    candles: str = "candles:{symbol}"


@dataclass(frozen=True)
class SymbolNames:
    """Every Redis name of one (venue, symbol)."""

    venue: str
    symbol: str
    orderbook: str  # channel, and key holding the newest book
    trades: str  # channel, and key holding the newest trade
    market_data: str  # channel, and key holding the newest ticker
    orderbook_stream: str  # stream of books conflated to a cadence (when Streams are on)
    trades_stream: str  # stream of every trade (when Streams are on)
    cluster: bool  # names are hash-tagged; use SSUBSCRIBE
    funding: str = ""  # channel, and key holding the newest ticker (mark price, funding, 24 h)
    candles: str = ""  # prefix of the candle channels and keys: <candles>:<interval>

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> SymbolNames:
        return cls(**orjson.loads(raw))


def directory_field(venue: str, symbol: str) -> str:
    """The DIRECTORY_KEY field of a (venue, symbol)."""
    return f"{venue}:{symbol}"


def symbol_names(
    templates: Templates, venue: str, symbol: str, *, segment: bool, cluster: bool
) -> SymbolNames:
    """The names of `symbol` on `venue`; `segment` puts the venue in front of the symbol."""
    exchange, _, market = venue.partition("-")
    names = {}
    for field_name in (
        "orderbook",
        "trades",
        "market_data",
        "orderbook_stream",
        "trades_stream",
        "funding",
        "candles",
    ):
        template = getattr(templates, field_name)
        explicit = "{exchange}" in template or "{market}" in template
        part = f"{venue}:{symbol}" if segment and not explicit else symbol
        if cluster:
            part = "{" + part + "}"
        names[field_name] = template.format(symbol=part, exchange=exchange, market=market)
    return SymbolNames(venue=venue, symbol=symbol, cluster=cluster, **names)


def candle_name(names: SymbolNames, interval: str) -> str:
    """The channel (and key) of a symbol's candles of one interval: candles:BTCUSDT:1m."""
    return f"{names.candles}:{interval}"


def venue_of(exchange: str, market: str) -> str:
    """The venue a feed's rings carry: exchange and market, e.g. "binance-futures"."""
    return f"{exchange}-{market}"
