"""OKX v5 public, SWAP and SPOT: endpoints and limits (`protocol`), frames (`parser`), the
books sync machine with the checksum (`sync`, `checksum`), the ingest's view (`venue`),
the subscribe-op budget (`budget`) and config (`spec`).

Readings chosen where the docs are ambiguous: a book message without seqId
is proven by its checksum alone, and after it the chain is unknown until a message proves
itself by its checksum; a REST snapshot with nothing buffered after it waits for the update
spanning its seqId before the book counts as exact; an in-band snapshot of a state the book
has already been in (a rollover's new socket) is not loaded again.
"""

from __future__ import annotations

from typing import Any

from mdpipe.venues.okx.venue import OkxVenue


def make_venue(feed: Any, symbols: list[str]) -> OkxVenue:
    """The venue of one ingest shard of an okx `[[feeds]]` entry."""
    return OkxVenue(
        feed.market,
        symbols,
        ws_url=feed.ws_url,
        rest_url=feed.rest_url,
        book_start=getattr(feed, "book_start", "snapshot"),
        snapshot_limit=feed.snapshot_limit,
        ping_interval=min(20.0, feed.silence_timeout / 2),
        tickers=getattr(feed, "tickers", False),
    )


__all__ = ["OkxVenue", "make_venue"]
