"""Bybit as the ingest sees it: one route per market, subscribe batches, ping, in-band books.

Books start from the snapshot Bybit pushes after each subscribe, so no REST is used; a broken
book is rebuilt by unsubscribing and subscribing its topic again. Bybit announces no
shutdown and cuts no connection on a schedule: a lost connection reconnects, resubscribes
and gets fresh snapshots. A refused subscription comes back as an Ack with success false that
names only its request, and may refuse every topic in it: so each topic is subscribed by a
request of its own whose req_id is the topic (well under spot's 10 args), and a refusal
costs that topic alone and names it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mdpipe.instrument import Instrument
from mdpipe.venues.base import (
    DEPTH,
    TICKER,
    TRADE,
    BookSync,
    DepthDiff,
    DepthSnapshot,
    Recovery,
    RestVerdict,
    RoutePlan,
    RouteState,
    SendFrames,
    StreamKey,
    Trade,
    default_rest_verdict,
)
from mdpipe.venues.bybit.spec import book_depth
from mdpipe.venues.bybit.sync import BybitBookSync
from mdpipe.venues.bybit.wire import (
    MAX_ARGS_CHARS,
    PING,
    PING_INTERVAL,
    WS_PATH,
    BybitParser,
    book_topic,
    request,
    ticker_topic,
    trade_topic,
)
from mdpipe.venues.errors import UNKNOWN_EVENT, FeedError
from mdpipe.venues.symbols import split_concatenated

NAME = "bybit"
BANNED_WAIT = 600.0  # REST 403 "access too frequent": Bybit asks for at least 10 minutes


class BybitVenue:
    """Bybit linear (USDT perpetuals) or spot for one ingest shard's symbols."""

    name = NAME

    def __init__(
        self,
        market: str,
        symbols: list[str],
        *,
        ws_url: str,
        depth_stream: str = "orderbook.50",
        tickers: bool = False,
    ) -> None:
        depth = book_depth(depth_stream)
        if depth is None:
            raise ValueError(f"not a Bybit book stream: {depth_stream!r}")
        self.market = market
        self.exchange = f"{NAME}-{market}"
        self.symbols = list(symbols)
        self.parser = BybitParser(market)
        self.url = ws_url.rstrip("/") + WS_PATH.format(market=market)
        self.depth = depth
        self.tickers = tickers

    def plan(self) -> list[RoutePlan]:
        """Routes of at most 21,000 characters of topics, one subscribe request per topic."""
        routes: list[RoutePlan] = []
        streams: dict[StreamKey, str] = {}
        chars = 0
        for sym in self.symbols:
            pair = {(sym, DEPTH): book_topic(self.depth, sym), (sym, TRADE): trade_topic(sym)}
            if self.tickers:
                pair[(sym, TICKER)] = ticker_topic(sym)
            size = sum(len(t) + 3 for t in pair.values())  # quotes and comma in the request
            if streams and chars + size > MAX_ARGS_CHARS:
                routes.append(self._route(len(routes), streams))
                streams, chars = {}, 0
            streams.update(pair)
            chars += size
        routes.append(self._route(len(routes), streams))
        return routes

    def _route(self, index: int, streams: dict[StreamKey, str]) -> RoutePlan:
        requests = tuple(request("subscribe", topic, [topic]) for topic in streams.values())
        return RoutePlan(f"{self.market}#{index}", self.url, streams, requests, PING, PING_INTERVAL)

    def book_sync(self, symbol: str) -> BookSync:
        """Snapshot then u + 1 per delta."""
        return BybitBookSync()

    def instrument(self, symbol: str) -> Instrument:
        """Linear symbols are USDT perpetuals (BTCUSDT), spot symbols pairs."""
        return split_concatenated(symbol, "perp" if self.market == "linear" else "spot")

    def recovery(self, symbol: str) -> Recovery:
        """Unsubscribe and subscribe the symbol's book topic: the answer starts with a snapshot."""
        topic = book_topic(self.depth, symbol)
        return SendFrames(
            (
                request("unsubscribe", f"resync-{symbol}", [topic]),
                request("subscribe", f"resync-{symbol}", [topic]),
            )
        )

    def parse_snapshot(self, body: bytes) -> DepthSnapshot:
        """Never asked for: Bybit books start from the stream's snapshot."""
        raise FeedError(UNKNOWN_EVENT, "bybit books start from the stream's snapshot, not REST")

    def rest_verdict(
        self, status: int, retry_after: float | None, backoff: float, streak: int, error: str
    ) -> RestVerdict:
        """403 means 'access too frequent': Bybit wants at least 10 minutes of quiet."""
        if status == 403:
            return RestVerdict(
                "rest_403",
                BANNED_WAIT,
                True,
                logging.ERROR,
                f"the REST API answered 403 (access too frequent); waiting {BANNED_WAIT:.0f} s",
            )
        return default_rest_verdict(status, backoff, error)

    def quiet_streams(self, streams: Iterable[StreamKey], unseen: set[StreamKey]) -> set[StreamKey]:
        """A trade topic is only quiet when its symbol's book topic (same socket) delivered."""
        return {
            (sym, TRADE) for sym, kind in streams if kind == DEPTH and (sym, DEPTH) not in unseen
        }

    def overlap_diff(
        self, route: RouteState, sync: BookSync, diff: DepthDiff
    ) -> tuple[DepthDiff | None, bool]:
        """Bybit feeds are never rolled over (config refuses rollover_after): pass through."""
        return diff, False

    def overlap_trade(
        self, route: RouteState, last_trade_id: int, trade: Trade
    ) -> tuple[bool, bool]:
        """Bybit feeds are never rolled over: pass through."""
        return True, False
