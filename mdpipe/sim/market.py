"""Synthetic market: per-symbol books driven by a seeded random walk, emitting book events."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from mdpipe.sim.instruments import FUTURES, SymbolSpec
from mdpipe.sim.orderbook import Book, Side

# Order-flow mix per action; the rest are limit-order adds.
_P_TAKER = 0.10
_P_CANCEL = 0.42


@dataclass(slots=True)
class Fill:
    """One maker fill of a taker order: one `trade` message."""

    trade_id: int
    price: int  # ticks
    lots: int
    buyer_maker: bool


@dataclass(slots=True)
class AggFill:
    """The fills of one taker order at one price: one `aggTrade` message."""

    agg_id: int
    price: int  # ticks
    lots: int
    first_id: int
    last_id: int
    buyer_maker: bool


@dataclass(slots=True)
class BookEvent:
    """Everything one matching-engine step changed in one symbol's book."""

    symbol: str
    first_id: int  # U
    last_id: int  # u
    prev_id: int  # pu: the previous event's u
    bids: dict[int, int]  # changed levels: ticks -> new lots (0 = removed)
    asks: dict[int, int]
    fills: list[Fill] = field(default_factory=list)
    aggs: list[AggFill] = field(default_factory=list)
    top: tuple[int, int, int, int] = (0, 0, 0, 0)  # bid ticks, bid lots, ask ticks, ask lots
    top_changed: bool = False
    gap: bool = False  # set by the gap fault: diff streams must skip this event

    def messages(self) -> int:
        """Messages this event puts on the per-event streams (diff, bookTicker, trades)."""
        return 1 + len(self.fills) + self.top_changed


class SymbolMarket:
    """One symbol's book and order flow; deterministic for a given seed."""

    def __init__(self, spec: SymbolSpec, market: str, seed: int, levels: int) -> None:
        self.spec = spec
        self.market = market
        self.rng = random.Random(f"{seed}:{spec.symbol}:flow")
        self.book = Book()
        self.levels = levels
        rng = self.rng
        # Real ids are large and per symbol; futures ids also jump between diffs.
        if market == FUTURES:
            self.last_id = 5_000_000_000_000 + rng.randrange(10**11)
        else:
            self.last_id = 50_000_000_000 + rng.randrange(10**9)
        self.trade_id = 1_000_000_000 + rng.randrange(10**9)
        self.agg_id = 500_000_000 + rng.randrange(10**8)
        self._log_size = math.log(spec.lot_median)
        mid = spec.price // spec.tick
        self.fair = float(mid)
        self._seed_side(self.book.bids, mid - 1, -1)
        self._seed_side(self.book.asks, mid + 1, +1)
        self.top = self.book.best_bid_ask()

    def _size(self, scale: float = 1.0) -> int:
        return max(1, int(self.rng.lognormvariate(self._log_size, 1.0) * scale))

    def _seed_side(self, side: Side, start: int, direction: int) -> None:
        price = start
        side.set(price, self._size())
        while len(side) < self.levels:
            price += direction * (1 + int(self.rng.expovariate(3.0)))
            if price <= 0:
                break
            side.set(price, self._size())

    def step(self) -> BookEvent:
        """Run one matching-engine step (one to three order actions) and describe it."""
        rng = self.rng
        book = self.book
        bid, _, ask, _ = self.top
        mid = (bid + ask) / 2.0
        # The fair value walks and is pulled back toward the book so they never drift apart.
        self.fair += rng.gauss(0.0, 0.35) - 0.002 * (self.fair - mid)
        ev = BookEvent(self.spec.symbol, 0, 0, self.last_id, {}, {})
        count = 1 + (rng.random() < 0.45) + (rng.random() < 0.2)
        # A taker order goes first, so every trade prints at a price of the book as the
        # previous event left it (what clients saw in the last bookTicker).
        draws = sorted(rng.random() for _ in range(count))
        for r in draws:
            if r < _P_TAKER:
                self._taker(ev)
            elif r < _P_TAKER + _P_CANCEL:
                self._cancel(ev)
            else:
                self._add(ev)
        self._maintain(ev, book.bids, ev.bids, -1)
        self._maintain(ev, book.asks, ev.asks, +1)
        changes = len(ev.bids) + len(ev.asks)
        if self.market == FUTURES:
            # Futures ids count every internal update: U skips past pu and u - U is wide.
            ev.first_id = self.last_id + 1 + rng.randrange(1, 150)
            ev.last_id = ev.first_id + changes + rng.randrange(0, 60)
        else:
            ev.first_id = self.last_id + 1
            ev.last_id = ev.first_id + changes - 1 + rng.randrange(0, 3)
        self.last_id = ev.last_id
        top = book.best_bid_ask()
        ev.top = top
        ev.top_changed = top != self.top
        self.top = top
        return ev

    def _set(self, side: Side, changes: dict[int, int], price: int, lots: int) -> None:
        side.set(price, lots)
        changes[price] = lots

    def _taker(self, ev: BookEvent) -> None:
        rng = self.rng
        bid, ask = self.book.bids.best(), self.book.asks.best()
        skew = self.fair - (bid + ask) / 2.0
        buy = rng.random() < 1.0 / (1.0 + math.exp(-skew / 1.5))
        side, changes = (self.book.asks, ev.asks) if buy else (self.book.bids, ev.bids)
        remaining = self._size(0.4)
        swept = 0
        while remaining > 0 and swept < 4 and len(side) > 1:
            price = side.best()
            resting = side.qty[price]
            take = min(remaining, resting)
            # A level holds several maker orders: one taker fill per maker, one aggTrade.
            makers = min(take, 1 + (rng.random() < 0.35) + (rng.random() < 0.15))
            first = self.trade_id + 1
            left = take
            for k in range(makers, 0, -1):
                part = left if k == 1 else rng.randint(1, left - k + 1)
                left -= part
                self.trade_id += 1
                ev.fills.append(Fill(self.trade_id, price, part, not buy))
            self.agg_id += 1
            ev.aggs.append(AggFill(self.agg_id, price, take, first, self.trade_id, not buy))
            self._set(side, changes, price, resting - take)
            remaining -= take
            swept += 1

    def _cancel(self, ev: BookEvent) -> None:
        rng = self.rng
        is_bid = rng.random() < 0.5
        side, changes = (self.book.bids, ev.bids) if is_bid else (self.book.asks, ev.asks)
        rank = min(int(rng.expovariate(1 / 25.0)), len(side) - 1)
        price = side.at_rank(rank)
        resting = side.qty[price]
        if resting > 1 and (rng.random() < 0.55 or len(side) <= 2):
            self._set(side, changes, price, rng.randint(1, resting - 1))
        elif len(side) > 2:
            self._set(side, changes, price, 0)

    def _add(self, ev: BookEvent) -> None:
        rng = self.rng
        book = self.book
        bid, ask = book.bids.best(), book.asks.best()
        skew = self.fair - (bid + ask) / 2.0
        spread = ask - bid
        if spread > 1 and rng.random() < 0.35:
            # Improve inside the spread, more often on the side the fair value leans to.
            is_bid = rng.random() < 1.0 / (1.0 + math.exp(-skew))
            inside = rng.randint(1, spread - 1)
            price = bid + inside if is_bid else ask - inside
        else:
            is_bid = rng.random() < 0.5
            depth = int(rng.expovariate(1 / 12.0))
            price = bid - depth if is_bid else ask + depth
            if price <= 0:
                return
        side, changes = (book.bids, ev.bids) if is_bid else (book.asks, ev.asks)
        self._set(side, changes, price, side.qty.get(price, 0) + self._size())

    def _maintain(self, ev: BookEvent, side: Side, changes: dict[int, int], direction: int) -> None:
        """Keep each side near its target depth: drop the farthest levels, refill thin ones."""
        while len(side) > self.levels * 1.25:
            self._set(side, changes, side.worst(), 0)
        while len(side) < self.levels * 0.9:
            price = side.worst() + direction * (1 + int(self.rng.expovariate(1.0)))
            if price <= 0:
                break
            self._set(side, changes, price, self._size())


class MarketModel:
    """All symbols of one market and the seeded scheduler choosing which one moves next."""

    def __init__(self, specs: list[SymbolSpec], market: str, seed: int, levels: int) -> None:
        self.market = market
        self.symbols: dict[str, SymbolMarket] = {
            s.symbol: SymbolMarket(s, market, seed, levels) for s in specs
        }
        self._order = list(self.symbols.values())
        self._rng = random.Random(f"{seed}:schedule")
        # Earlier symbols are busier, like BTC versus the rest of a real book of symbols.
        weights = [1.0 / math.sqrt(i + 1) for i in range(len(self._order))]
        total = 0.0
        self._cum: list[float] = []
        for w in weights:
            total += w
            self._cum.append(total)

    def next_symbol(self, frozen: set[str]) -> SymbolMarket | None:
        """The symbol that moves next, skipping frozen (silenced) ones."""
        if len(frozen) >= len(self._order):
            return None
        while True:
            sm = self._rng.choices(self._order, cum_weights=self._cum)[0]
            if sm.spec.symbol not in frozen:
                return sm
