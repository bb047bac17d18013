"""Binance spot and USD-M futures: wire format (`wire`), sync rules (`sync`), rollover
de-duplication (`rollover`), the ingest's view (`venue`) and config (`spec`)."""

from __future__ import annotations

from typing import Any

from mdpipe.venues.binance.venue import BinanceVenue


def make_venue(feed: Any, symbols: list[str]) -> BinanceVenue:
    """The venue of one ingest shard of a binance `[[feeds]]` entry."""
    return BinanceVenue(
        feed.market,
        symbols,
        ws_url=feed.ws_url,
        rest_url=feed.rest_url,
        depth_stream=feed.depth_stream,
        trade_stream=feed.trade_stream,
        snapshot_limit=feed.snapshot_limit,
        slow_retry=feed.reconnect_max,
        tickers=feed.tickers,
    )


__all__ = ["BinanceVenue", "make_venue"]
