"""The simulator's own exact order book: integer ticks and lots, sorted price ladders."""

from __future__ import annotations

from bisect import bisect_left, insort


class Side:
    """One side of a book: level quantities by price plus an ascending list of prices."""

    __slots__ = ("qty", "prices", "is_bid")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.qty: dict[int, int] = {}
        self.prices: list[int] = []

    def __len__(self) -> int:
        return len(self.prices)

    def set(self, price: int, lots: int) -> None:
        """Set a level's absolute quantity; zero removes it."""
        if lots > 0:
            if price not in self.qty:
                insort(self.prices, price)
            self.qty[price] = lots
        elif price in self.qty:
            del self.qty[price]
            del self.prices[bisect_left(self.prices, price)]

    def best(self) -> int:
        """Best price (highest bid, lowest ask); the side must not be empty."""
        return self.prices[-1] if self.is_bid else self.prices[0]

    def at_rank(self, rank: int) -> int:
        """Price of the level `rank` places away from the best (0 is the best)."""
        return self.prices[-1 - rank] if self.is_bid else self.prices[rank]

    def worst(self) -> int:
        """Price of the level farthest from the best."""
        return self.prices[0] if self.is_bid else self.prices[-1]

    def top(self, n: int) -> list[tuple[int, int]]:
        """The best `n` levels, best first, as (price, lots)."""
        prices = self.prices[: -n - 1 : -1] if self.is_bid else self.prices[:n]
        qty = self.qty
        return [(p, qty[p]) for p in prices]


class Book:
    """Bids and asks; callers keep it uncrossed."""

    __slots__ = ("bids", "asks")

    def __init__(self) -> None:
        self.bids = Side(is_bid=True)
        self.asks = Side(is_bid=False)

    def best_bid_ask(self) -> tuple[int, int, int, int]:
        """(bid price, bid lots, ask price, ask lots) of the top of book."""
        bid = self.bids.best()
        ask = self.asks.best()
        return bid, self.bids.qty[bid], ask, self.asks.qty[ask]
