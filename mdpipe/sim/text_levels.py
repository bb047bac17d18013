"""Books kept as the exact decimal text a venue sent (price -> size), as tapes are replayed."""

from __future__ import annotations

TextLevels = list[tuple[str, str]]


def best_first(
    bids: dict[str, str], asks: dict[str, str], limit: int | None = None
) -> tuple[TextLevels, TextLevels]:
    """The best `limit` (all by default) bids by price descending and asks ascending."""
    best_bids = sorted(bids.items(), key=lambda kv: float(kv[0]), reverse=True)[:limit]
    best_asks = sorted(asks.items(), key=lambda kv: float(kv[0]))[:limit]
    return best_bids, best_asks
