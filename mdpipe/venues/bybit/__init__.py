"""Bybit v5 public, USDT linear perpetuals and spot: wire format (`wire`), book rules
(`sync`), the ingest's view (`venue`) and config (`spec`)."""

from __future__ import annotations

from typing import Any

from mdpipe.venues.bybit.venue import BybitVenue


def make_venue(feed: Any, symbols: list[str]) -> BybitVenue:
    """The venue of one ingest shard of a bybit `[[feeds]]` entry."""
    return BybitVenue(
        feed.market,
        symbols,
        ws_url=feed.ws_url,
        depth_stream=feed.depth_stream,
        tickers=getattr(feed, "tickers", False),
    )


__all__ = ["BybitVenue", "make_venue"]
