"""Binance's venue rules fed events directly, without sockets: routes, REST policy, stream
faults, and the rollover de-duplication of two sockets carrying the same streams."""

from __future__ import annotations

import logging

import pytest

from mdpipe.ingest.backoff import Backoff
from mdpipe.ingest.connection import Connection
from mdpipe.instrument import Instrument
from mdpipe.venues import make_venue, venue_names, venue_spec
from mdpipe.venues.base import FetchSnapshot, Trade
from mdpipe.venues.binance import BinanceVenue
from mdpipe.venues.binance.sync import book_sync
from mdpipe.venues.binance.wire import DepthDiff, DepthSnapshot

# Every test here runs on both hot paths: the C book and level readers, and pure Python.
pytestmark = pytest.mark.usefixtures("hot_path")


def _venue(market: str = "futures") -> BinanceVenue:
    return BinanceVenue(
        market, ["BTCUSDT", "ETHUSDT"], ws_url="ws://h:1", rest_url="http://h:1", slow_retry=9.0
    )


def test_registry_finds_binance_and_builds_it_from_a_feed() -> None:
    assert "binance" in venue_names()
    assert venue_spec("binance").MARKETS == ("futures", "spot")

    class Feed:
        exchange, market, ws_url, rest_url = "binance", "spot", "ws://h:1", "http://h:1"
        depth_stream, trade_stream, snapshot_limit, reconnect_max = "depth", "trade", 100, 5.0
        tickers = True

    v = make_venue(Feed, ["BTCUSDT"])
    assert v.exchange == "binance-spot"
    assert v.recovery("BTCUSDT") == FetchSnapshot(
        "http://h:1/api/v3/depth?symbol=BTCUSDT&limit=100"
    )


def test_futures_routes_split_depth_and_trades_with_mark_price() -> None:
    routes = _venue().plan()
    assert [r.name for r in routes] == ["public#0", "market#1"]
    assert routes[0].streams == {("BTCUSDT", "depth"): "btcusdt@depth@100ms",
                                 ("ETHUSDT", "depth"): "ethusdt@depth@100ms"}  # fmt: skip
    assert routes[1].streams[("BTCUSDT", "mark")] == "btcusdt@markPrice@1s"
    assert routes[0].subscribe == () and routes[0].ping == b""  # URL streams; the server pings


def test_instruments_are_perps_on_futures_and_pairs_on_spot() -> None:
    assert _venue().instrument("BTCUSDT") == Instrument("BTC", "USDT", "perp")
    assert _venue("spot").instrument("ETHBTC") == Instrument("ETH", "BTC", "spot")
    # A quote asset not in the table: no guess (ingest then lists the symbol by name only).
    with pytest.raises(ValueError, match="no known quote asset"):
        _venue("spot").instrument("BTCPLN")


def test_rest_policy() -> None:
    v = _venue()
    first = v.rest_verdict(451, None, 0.5, 0, "")
    assert (first.counter, first.wait, first.blocked, first.level) == (
        "rest_451", 9.0, True, logging.ERROR)  # fmt: skip
    assert "geo-blocked" in first.message
    assert v.rest_verdict(451, None, 0.5, 3, "").message == ""  # said once per streak
    limited = v.rest_verdict(429, 7.0, 0.5, 0, "")
    assert (limited.counter, limited.wait, limited.blocked) == ("rest_429", 7.0, True)
    assert v.rest_verdict(418, None, 0.25, 0, "").wait == 0.25  # no Retry-After: back off
    failed = v.rest_verdict(503, None, 1.5, 0, "")
    assert (failed.counter, failed.wait, failed.blocked) == ("rest_5xx", 1.5, False)
    assert "timed out" in v.rest_verdict(0, None, 1.0, 0, "timed out").message


def test_quiet_trade_streams_are_those_whose_mark_price_arrives() -> None:
    streams = [("BTCUSDT", "trade"), ("BTCUSDT", "mark"), ("ETHUSDT", "trade"), ("ETHUSDT", "mark")]
    unseen = {("BTCUSDT", "trade"), ("ETHUSDT", "trade"), ("ETHUSDT", "mark")}
    assert _venue().quiet_streams(streams, unseen) == {("BTCUSDT", "trade")}


def _diff(first: int, last: int, prev: int) -> DepthDiff:
    return DepthDiff("BTCUSDT", 0, 0, first, last, prev, [], [], [], [])


def _rollover() -> tuple[Connection, Connection]:
    """A route whose old socket hands over to its replacement (no socket opened)."""
    route = Connection("public#0", "ws://h:1/x", {("BTCUSDT", "depth"): "s"}, Backoff(1, 1))
    old = route.hand_over()
    return route, old


def test_overlap_drops_what_the_book_has_and_applies_what_covers_it() -> None:
    v = _venue()
    sync = book_sync("futures")
    sync.on_diff(_diff(90, 100, 89))
    sync.on_snapshot(DepthSnapshot(95, [], [], [], []))
    assert sync.synced and sync.last_update_id == 100
    new, old = _rollover()
    # The new socket's diff ahead of the book waits for the old socket.
    assert v.overlap_diff(new, sync, _diff(110, 120, 109)) == (None, False)
    # The old socket's next diff is applied as usual.
    d, dup = v.overlap_diff(old, sync, _diff(101, 105, 100))
    assert d is not None and not dup
    sync.on_diff(d)
    # The new socket cut the stream differently: a diff spanning the book's id is the next one.
    d, dup = v.overlap_diff(new, sync, _diff(103, 108, 102))
    assert d.prev_id == 105 and not dup and ("BTCUSDT", "depth") in new.caught_up
    sync.on_diff(d)
    # What the book already has, from either socket, is a duplicate.
    assert v.overlap_diff(old, sync, _diff(106, 108, 105)) == (None, True)


def test_overlap_commits_each_trade_once_in_order() -> None:
    v = _venue()
    new, old = _rollover()
    new.ws = object()  # the replacement is up

    def t(i: int) -> Trade:
        return Trade("BTCUSDT", 0, 0, i, 1.0, 1.0, False, i, i, True, "")

    assert v.overlap_trade(old, 10, t(11)) == (True, False)
    assert ("BTCUSDT", "trade") in old.delivered
    assert v.overlap_trade(new, 11, t(11)) == (False, True)  # the old socket had it
    assert v.overlap_trade(new, 11, t(13)) == (False, False)  # ahead: the old one delivers 12
    assert v.overlap_trade(new, 11, t(12)) == (True, False)
    assert ("BTCUSDT", "trade") in new.caught_up
