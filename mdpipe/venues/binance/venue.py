"""Binance as the ingest sees it: routes, REST snapshots and their status policy, stream rules.

Books start from a REST snapshot plus the buffered diffs (`sync.py`); the exchange cuts
every connection at 24 h and may announce a `serverShutdown`, both handled make-before-break
by the ingest with `rollover.py` de-duplicating what both sockets deliver.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

import orjson

from mdpipe.instrument import Instrument
from mdpipe.venues.base import (
    DEPTH,
    MARK,
    TICKER,
    TRADE,
    BookSync,
    DepthDiff,
    DepthSnapshot,
    FetchSnapshot,
    Recovery,
    RestVerdict,
    RoutePlan,
    RouteState,
    StreamKey,
    Trade,
    default_rest_verdict,
)
from mdpipe.venues.binance import limits, rollover
from mdpipe.venues.binance.sync import book_sync
from mdpipe.venues.binance.wire import (
    FUTURES,
    BinanceParser,
    parse_snapshot,
    plan_connections,
    snapshot_url,
)
from mdpipe.venues.errors import MISSING_FIELD, FeedError
from mdpipe.venues.pacing import WeightBudget
from mdpipe.venues.symbols import split_concatenated

NAME = "binance"


def stream_key(stream: str) -> StreamKey:
    """'btcusdt@depth@0ms' -> ('BTCUSDT', 'depth'); 'btcusdt@aggTrade' -> ('BTCUSDT', 'trade');
    'btcusdt@markPrice@1s' -> ('BTCUSDT', 'mark'); 'btcusdt@ticker' -> ('BTCUSDT', 'ticker')."""
    name, _, kind = stream.partition("@")
    if kind.startswith("depth"):
        return name.upper(), DEPTH
    if kind == "ticker":
        return name.upper(), TICKER
    return name.upper(), MARK if kind.startswith("markPrice") else TRADE


class BinanceVenue:
    """Binance spot or USD-M futures for one ingest shard's symbols."""

    name = NAME

    def __init__(
        self,
        market: str,
        symbols: list[str],
        *,
        ws_url: str,
        rest_url: str,
        depth_stream: str = "depth@100ms",
        trade_stream: str = "aggTrade",
        snapshot_limit: int = 1000,
        slow_retry: float = 30.0,
        tickers: bool = False,
    ) -> None:
        self.market = market
        self.exchange = f"{NAME}-{market}"
        self.symbols = list(symbols)
        self.parser = BinanceParser(market)
        self.ws_url, self.rest_url = ws_url, rest_url
        self.depth_stream, self.trade_stream = depth_stream, trade_stream
        self.tickers = tickers
        self.slow_retry = slow_retry  # between requests while the REST API answers 451
        self.snapshot_limit = snapshot_limit
        self._snapshot_urls = {
            sym: snapshot_url(market, sym, snapshot_limit, rest_url) for sym in self.symbols
        }

    def plan(self) -> list[RoutePlan]:
        """Combined-stream URLs within URL_BUDGET, the other streams by paced SUBSCRIBE
        messages; the server pings (answered by the socket)."""
        planned = plan_connections(
            self.market,
            self.symbols,
            depth=self.depth_stream,
            trade=self.trade_stream,
            book_ticker=False,  # subscribe only what is used
            ws_base=self.ws_url,
            # Futures trades travel alone on /market: the 1 s mark price keeps a quiet
            # market's connection from looking dead and proves the route delivers.
            mark_price=self.market == FUTURES,
            max_streams=limits.MAX_STREAMS,
            ticker=self.tickers,
        )
        routes = []
        for i, (url, streams) in enumerate(planned):
            route = urlsplit(url).path.strip("/").split("/")[0]
            short_url, rest = limits.split_url(url.partition("?")[0], list(streams))
            routes.append(
                RoutePlan(
                    f"{route}#{i}",
                    short_url,
                    {stream_key(s): s for s in streams},
                    limits.request_frames("SUBSCRIBE", rest),
                    send_rate=limits.SEND_RATE[self.market],
                )
            )
        return routes

    # ----- runtime subscriptions ----------------------------------------------------------

    max_streams = limits.MAX_STREAMS

    def symbol_streams(self, symbol: str) -> dict[str, dict[StreamKey, str]]:
        """A symbol's streams by the route group that carries them ("public", "market", ...)."""
        name = symbol.lower()
        depth = f"{name}@{self.depth_stream}"
        trades = [f"{name}@{self.trade_stream}"]
        if self.tickers:
            trades.append(f"{name}@ticker")
        if self.market != FUTURES:
            return {"stream": {stream_key(s): s for s in [depth, *trades]}}
        trades.append(f"{name}@markPrice@1s")
        return {
            "public": {stream_key(depth): depth},
            "market": {stream_key(s): s for s in trades},
        }

    def request_frames(self, subscribe: bool, streams: list[str]) -> tuple[bytes, ...]:
        """SUBSCRIBE or UNSUBSCRIBE messages for streams of a live connection."""
        return limits.request_frames("SUBSCRIBE" if subscribe else "UNSUBSCRIBE", streams)

    def add_symbol(self, symbol: str) -> None:
        """Serve a symbol subscribed at runtime (its snapshot URL)."""
        if symbol not in self._snapshot_urls:
            self.symbols.append(symbol)
            self._snapshot_urls[symbol] = snapshot_url(
                self.market, symbol, self.snapshot_limit, self.rest_url
            )

    def listing_url(self) -> str:
        """exchangeInfo (weight 1): every symbol the exchange lists, for runtime subscriptions."""
        path = "/fapi/v1/exchangeInfo" if self.market == FUTURES else "/api/v3/exchangeInfo"
        return self.rest_url.rstrip("/") + path

    def listed(self, body: bytes) -> set[str]:
        """The symbols an exchangeInfo reply lists as trading (perpetuals on futures)."""
        try:
            rows = orjson.loads(body)["symbols"]
            return {
                r["symbol"]
                for r in rows
                if r.get("status") == "TRADING"
                and (self.market != FUTURES or r.get("contractType") == "PERPETUAL")
            }
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise FeedError(MISSING_FIELD, "exchangeInfo without a symbols list") from None

    def rest_budget(self) -> WeightBudget:
        """The REST weight pacing of this shard's snapshots (see limits)."""
        return limits.weight_budget(self.market, self.snapshot_limit)

    weight_header = limits.WEIGHT_HEADER

    def book_sync(self, symbol: str) -> BookSync:
        """The futures (pu chain) or spot (U/u overlap) machine."""
        return book_sync(self.market)

    def instrument(self, symbol: str) -> Instrument:
        """USD-M symbols are perpetuals (the config refuses dated contracts), spot pairs spot."""
        return split_concatenated(symbol, "perp" if self.market == FUTURES else "spot")

    def recovery(self, symbol: str) -> Recovery:
        """Always a REST snapshot, reconciled with the buffered diffs."""
        return FetchSnapshot(self._snapshot_urls[symbol])

    def parse_snapshot(self, body: bytes) -> DepthSnapshot:
        """A /depth reply."""
        return parse_snapshot(body)

    def rest_verdict(
        self, status: int, retry_after: float | None, backoff: float, streak: int, error: str
    ) -> RestVerdict:
        """451: geo-blocked, retry slowly and say so once; 429/418: wait as asked (the
        exchange bans IPs that keep asking); anything else: back off."""
        if status == 451:
            message = ""
            if not streak:
                message = (
                    "the REST API answered 451: this host is geo-blocked by the exchange; "
                    "the book stays unsynced (never published as exact); "
                    f"retrying every {self.slow_retry:.1f} s"
                )
            return RestVerdict("rest_451", self.slow_retry, True, logging.ERROR, message)
        if status in (429, 418):
            wait = retry_after if retry_after is not None else backoff
            what = "rate limited" if status == 429 else "IP banned for ignoring rate limits"
            return RestVerdict(
                f"rest_{status}",
                wait,
                True,
                logging.WARNING,
                f"the REST API answered {status} ({what}); waiting {wait:.1f} s as asked",
            )
        return default_rest_verdict(status, backoff, error)

    def quiet_streams(self, streams: Iterable[StreamKey], unseen: set[StreamKey]) -> set[StreamKey]:
        """A trade stream whose symbol's mark price arrives on the same connection is only a
        market where nothing traded yet."""
        return {(sym, TRADE) for sym, kind in streams if (sym, MARK) not in unseen}

    def overlap_diff(
        self, route: RouteState, sync: BookSync, diff: DepthDiff
    ) -> tuple[DepthDiff | None, bool]:
        """See rollover.overlap_diff."""
        return rollover.overlap_diff(route, sync, diff)

    def overlap_trade(
        self, route: RouteState, last_trade_id: int, trade: Trade
    ) -> tuple[bool, bool]:
        """See rollover.overlap_trade."""
        return rollover.overlap_trade(route, last_trade_id, trade)
