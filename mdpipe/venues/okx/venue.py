"""OKX as the ingest sees it: routes and keepalive, book sync and recovery, REST policy, rollover.

One connection per 29 instruments carries `books` and `trades`; `bbo-tbt` is not
subscribed (the ingest does not use the venue's top; tests read it from the simulator).
Books start from the in-band snapshot (`book_start = "snapshot"`, recovery by unsubscribe +
subscribe, within the 480-ops-per-hour budget, by REST beyond it) or from REST plus the
buffered updates (`book_start = "rest"`). The 64008 notice is a ServerShutdown: the ingest
replaces the connection make-before-break, and `overlap_diff` drops what both sockets bring.
SWAP sizes stay in contracts (ctVal from the instruments endpoint converts them).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable

from mdpipe.instrument import Instrument
from mdpipe.venues.base import (
    DEPTH,
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
    SendFrames,
    StreamKey,
    Trade,
    default_rest_verdict,
)
from mdpipe.venues.okx.budget import SubscribeBudget
from mdpipe.venues.okx.parser import NO_SEQ_ID, OkxParser, parse_rest_books
from mdpipe.venues.okx.protocol import (
    BOOKS,
    PING_AFTER_S,
    SUBSCRIBE_OPS_PER_HOUR,
    TICKERS,
    TRADES,
    Arg,
    books_url,
    exchange_name,
    instrument,
    op_messages,
    plan_connections,
)
from mdpipe.venues.okx.sync import START_REST, OkxBookSync

NAME = "okx"
log = logging.getLogger("mdpipe.venues.okx")


def _rolling(route: RouteState) -> bool:
    return route.successor is not None or route.retiring is not None or bool(route.settle_until)


_STREAM_KINDS = {BOOKS: DEPTH, TRADES: TRADE, TICKERS: TICKER}


class OkxVenue:
    """OKX SWAP or SPOT for one ingest shard's instruments."""

    name = NAME

    def __init__(
        self,
        market: str,
        symbols: list[str],
        *,
        ws_url: str,
        rest_url: str,
        book_start: str = "snapshot",
        snapshot_limit: int = 400,
        ping_interval: float = PING_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        tickers: bool = False,
    ) -> None:
        self.market = market
        self.exchange = exchange_name(market)
        self.symbols = list(symbols)
        self.parser = OkxParser()
        self.book_start = book_start
        self.ping_interval = ping_interval
        self._clock = clock
        self.tickers = tickers
        self._conns = plan_connections(
            market, self.symbols, top_channel=None, ws_base=ws_url, tickers=tickers
        )
        self._route = {inst: i for i, c in enumerate(self._conns) for inst in c.inst_ids}
        # What each route may still spend on resubscribes (its subscribe used the rest).
        ops = SUBSCRIBE_OPS_PER_HOUR
        self._budgets = [SubscribeBudget(ops - len(c.subscribe_messages())) for c in self._conns]
        self._rest_urls = {s: books_url(s, snapshot_limit, rest_url) for s in self.symbols}
        self._request_ids = itertools.count(1)
        self.resubscribes = 0
        self.rest_fallbacks = 0

    def plan(self) -> list[RoutePlan]:
        """One route per connection: subscribe frames, and the text ping OKX expects."""
        routes = []
        for i, conn in enumerate(self._conns):
            streams: dict[StreamKey, str] = {}
            for arg in conn.args:
                kind = _STREAM_KINDS.get(arg.channel)
                if kind is None:
                    # mark-price, funding-rate (every 30-90 s), open-interest: watched by
                    # the ticker staleness gauges, not by the never-delivered check.
                    continue
                streams[(arg.inst_id, kind)] = f"{arg.channel}:{arg.inst_id}"
            routes.append(
                RoutePlan(
                    f"public#{i}",
                    conn.url,
                    streams,
                    tuple(conn.subscribe_messages(f"s{i}n")),
                    b"ping",
                    self.ping_interval,
                )
            )
        return routes

    def book_sync(self, symbol: str) -> BookSync:
        """The seqId/checksum machine, starting as configured."""
        return OkxBookSync(self.book_start)

    def instrument(self, symbol: str) -> Instrument:
        """BTC-USDT-SWAP is BTC/USDT perp, BTC-USDT BTC/USDT spot."""
        return instrument(symbol, self.market)

    def recovery(self, symbol: str) -> Recovery:
        """REST start: GET books. In-band start: unsubscribe + subscribe `books` (a fresh
        snapshot), unless the route's hourly op budget is spent: then REST."""
        if self.book_start == START_REST:
            return FetchSnapshot(self._rest_urls[symbol])
        if not self._budgets[self._route[symbol]].spend(self._clock(), 2):
            self.rest_fallbacks += 1
            log.warning(
                "%s: the connection's 480 subscribe ops this hour are spent; resyncing by REST",
                symbol,
            )
            return FetchSnapshot(self._rest_urls[symbol])
        self.resubscribes += 1
        n = next(self._request_ids)
        arg = [Arg(BOOKS, symbol)]
        return SendFrames(
            (*op_messages("unsubscribe", arg, f"u{n}n"), *op_messages("subscribe", arg, f"r{n}n"))
        )

    def parse_snapshot(self, body: bytes) -> DepthSnapshot:
        """A REST books answer."""
        return parse_rest_books(body)

    def rest_verdict(
        self, status: int, retry_after: float | None, backoff: float, streak: int, error: str
    ) -> RestVerdict:
        """429: 40 requests per 2 s per IP were exceeded: wait as asked, else back off."""
        if status == 429:
            wait = retry_after if retry_after is not None else max(backoff, 2.0)
            return RestVerdict(
                "rest_429",
                wait,
                True,
                logging.WARNING,
                f"the REST API answered 429 (rate limited: 40 books requests per 2 s); "
                f"waiting {wait:.1f} s",
            )
        return default_rest_verdict(status, backoff, error)

    def quiet_streams(self, streams: Iterable[StreamKey], unseen: set[StreamKey]) -> set[StreamKey]:
        """An instrument's trades are only a quiet market when its books deliver."""
        return {
            (sym, TRADE) for sym, kind in streams if kind == TRADE and (sym, DEPTH) not in unseen
        }

    def overlap_diff(
        self, route: RouteState, sync: BookSync, d: DepthDiff
    ) -> tuple[DepthDiff | None, bool]:
        """During a rollover: a seqId the book has already been at is a duplicate, from
        either socket; an update continuing the book applies from the socket that has it
        first; the new socket's others wait for the old one to bring what lies between; the
        old socket's get the usual rules, except those behind a book the new socket's
        snapshot moved ahead."""
        if not _rolling(route):
            return d, False
        key = (d.symbol, DEPTH)
        if not sync.synced:
            return d, False
        seq, local = d.last_id, sync.last_update_id
        continues = d.prev_id == local and local >= 0
        if seq != NO_SEQ_ID and sync.seen(seq) and not continues:  # type: ignore[attr-defined]
            if route.retiring is not None:
                route.caught_up.add(key)
            return None, True
        if continues:
            if route.retiring is not None:
                route.caught_up.add(key)
            elif route.successor is not None and route.successor.up:
                route.delivered.add(key)
            return d, False
        if route.retiring is not None:
            return None, False
        if seq != NO_SEQ_ID and 0 <= seq < local:
            return None, True  # behind a snapshot the new socket moved the book ahead to
        return d, False

    def overlap_trade(
        self, route: RouteState, last_trade_id: int, trade: Trade
    ) -> tuple[bool, bool]:
        """During a rollover: each trade once, in tradeId order. A push covers the fills
        first_trade_id..trade_id, so the new socket has caught up when a push starts right
        after the last committed fill."""
        if not _rolling(route):
            return True, False
        key = (trade.symbol, TRADE)
        if trade.trade_id <= last_trade_id:
            if route.retiring is not None:
                route.caught_up.add(key)
            return False, True
        if route.successor is not None:
            if route.successor.up:
                route.delivered.add(key)
            return True, False
        if route.retiring is None:
            return True, False  # the old socket closed: what is not a duplicate is new
        if last_trade_id and trade.first_trade_id == last_trade_id + 1:
            route.caught_up.add(key)
            return True, False
        return False, False
