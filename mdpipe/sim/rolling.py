"""The simulator's 24-hour statistics and klines, kept exactly in ticks and lots from its fills.

`DayStats` backs Binance's `<s>@ticker` (statistics since the market started, which is
within 24 hours), `Kline` one `<s>@kline_<i>` candle. Both count every fill (trade), so
a client building candles from trades or aggTrades must find the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass

KLINE_INTERVALS_MS = {"1s": 1000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000}


@dataclass(slots=True)
class DayStats:
    """Rolling statistics of one symbol: prices in ticks, volumes in lots, quote in tick-lots."""

    open: int = 0
    high: int = 0
    low: int = 0
    last: int = 0
    last_lots: int = 0
    volume: int = 0
    quote: int = 0
    first_id: int = -1
    last_id: int = -1
    count: int = 0
    open_ms: int = 0

    def add(self, price: int, lots: int, trade_id: int, ts_ms: int) -> None:
        if self.count == 0:
            self.open = self.high = self.low = price
            self.first_id = trade_id
            self.open_ms = ts_ms
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.last, self.last_lots = price, lots
        self.volume += lots
        self.quote += price * lots
        self.last_id = trade_id
        self.count += 1


@dataclass(slots=True)
class Kline:
    """One kline being built: the interval [start_ms, start_ms + interval_ms)."""

    start_ms: int
    interval_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote: int
    taker_volume: int
    taker_quote: int
    first_id: int
    last_id: int
    count: int

    @classmethod
    def first(cls, interval_ms: int, price: int, lots: int, trade_id: int, ts_ms: int, buy: bool):
        start = ts_ms - ts_ms % interval_ms
        k = cls(start, interval_ms, price, price, price, price, 0, 0, 0, 0, trade_id, trade_id, 0)
        k.add(price, lots, trade_id, buy)
        return k

    def add(self, price: int, lots: int, trade_id: int, buy: bool) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += lots
        self.quote += price * lots
        if buy:
            self.taker_volume += lots
            self.taker_quote += price * lots
        self.last_id = trade_id
        self.count += 1

    def contains(self, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms < self.start_ms + self.interval_ms
