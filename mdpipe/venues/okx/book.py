"""An OKX book: the float L2 book plus each level's raw `px:sz` text for the checksum."""

from __future__ import annotations

from mdpipe.book import DEFAULT_WINDOW, OrderBook
from mdpipe.venues.okx.checksum import CHECKSUM_LEVELS, book_checksum
from mdpipe.venues.okx.events import BookMessage


class ChecksumBook(OrderBook):
    """`OrderBook` that also keeps the received text of every level, to verify checksums.

    The window keeps at least the 25 best levels per side, so the checksum reads them from
    the sorted window without a sort of the whole book.
    """

    __slots__ = ("bid_text", "ask_text")

    def __init__(self, window: int = DEFAULT_WINDOW, min_depth: int = CHECKSUM_LEVELS) -> None:
        depth = max(min_depth, CHECKSUM_LEVELS)
        self.bid_text: dict[float, str] = {}
        self.ask_text: dict[float, str] = {}
        super().__init__(max(window, 2 * depth), depth)

    def clear(self) -> None:
        """Remove every level."""
        super().clear()
        self.bid_text = {}
        self.ask_text = {}

    def load(self, m: BookMessage) -> None:
        """Replace the whole book with a snapshot's levels (size "0" levels are skipped)."""
        self.apply_snapshot(m.bid_prices, m.bid_qtys, m.ask_prices, m.ask_qtys)
        self.bid_text = {
            p: t for p, q, t in zip(m.bid_prices, m.bid_qtys, m.bid_text, strict=True) if q
        }
        self.ask_text = {
            p: t for p, q, t in zip(m.ask_prices, m.ask_qtys, m.ask_text, strict=True) if q
        }

    def update(self, m: BookMessage) -> None:
        """Apply an update's levels: absolute sizes, "0" deletes."""
        self.apply(m.bid_prices, m.bid_qtys, m.ask_prices, m.ask_qtys)
        for text, prices, qtys, pieces in (
            (self.bid_text, m.bid_prices, m.bid_qtys, m.bid_text),
            (self.ask_text, m.ask_prices, m.ask_qtys, m.ask_text),
        ):
            for p, q, t in zip(prices, qtys, pieces, strict=True):
                if q:
                    text[p] = t
                else:
                    text.pop(p, None)

    def checksum(self) -> int:
        """The signed CRC32 of the current top 25 levels per side, from the received text."""
        bid_text, ask_text = self.bid_text, self.ask_text
        bids = [bid_text[p] for p in self._bids.best_prices(CHECKSUM_LEVELS)]
        asks = [ask_text[p] for p in self._asks.best_prices(CHECKSUM_LEVELS)]
        return book_checksum(bids, asks)
