"""Rolling 24-hour trade statistics of one symbol in bounded memory (the market_data figures).

Trades go into per-minute buckets held in fixed arrays of MINUTES + 1 slots (slot = minute
mod MINUTES + 1, each slot remembering which minute it holds), so memory never grows and
nothing is ever removed one by one. The window is the current minute plus the MINUTES whole
minutes before it, as Binance's rolling ticker does: it covers 24 h plus the elapsed part of
the current minute, and a trade leaves it when its minute falls out.

Volume is never maintained by subtracting expired buckets (which drifts): each bucket keeps a
compensated (Neumaier) sum of exactly rounded per-batch sums, and the closed part of the
window is re-added with math.fsum whenever the window moves or a late trade lands in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MINUTES = 1440
MINUTE_NS = 60_000_000_000
_SLOTS = MINUTES + 1


@dataclass(frozen=True, slots=True)
class Window:
    """The 24-hour figures: base-asset volume, high and low price (None without trades), count."""

    volume: float
    high: float | None
    low: float | None
    trades: int


class Rolling24h:
    """Per-minute buckets of count, volume, high and low over a rolling 24-hour window."""

    def __init__(self) -> None:
        self._minute = np.full(_SLOTS, -1, np.int64)
        self._count = np.zeros(_SLOTS, np.int64)
        self._vol = np.zeros(_SLOTS, np.float64)
        self._comp = np.zeros(_SLOTS, np.float64)
        self._high = np.full(_SLOTS, -np.inf)
        self._low = np.full(_SLOTS, np.inf)
        self._end = -1  # the newest minute seen: the window ends there or at the clock's minute
        self._closed_end = -1  # window end for which the closed aggregate below is valid
        self._closed = (0, 0.0, -math.inf, math.inf)

    def add(self, ts_ns: np.ndarray, prices: np.ndarray, qtys: np.ndarray, now_ns: int) -> None:
        """Count trades of this symbol (exchange times in ns, prices, quantities) at clock now_ns."""
        if not len(ts_ns):
            return
        now_min = now_ns // MINUTE_NS
        # A trade stamped ahead of the local clock (skew) counts in the next minute at most.
        minutes = np.minimum(ts_ns // MINUTE_NS, now_min + 1)
        first, last = int(minutes[0]), int(minutes[-1])
        if first == last and (minutes == first).all():
            self._add_minute(first, prices, qtys, now_min)
            return
        for m in np.unique(minutes).tolist():
            sel = minutes == m
            self._add_minute(m, prices[sel], qtys[sel], now_min)

    def _add_minute(self, minute: int, prices: np.ndarray, qtys: np.ndarray, now_min: int) -> None:
        end = max(self._end, now_min, minute)
        if minute < end - MINUTES:
            return  # older than the window: it would only overwrite a live slot
        if minute > self._end:
            self._end = minute
        slot = minute % _SLOTS
        if self._minute[slot] != minute:
            self._minute[slot] = minute
            self._count[slot] = 0
            self._vol[slot] = 0.0
            self._comp[slot] = 0.0
            self._high[slot] = -np.inf
            self._low[slot] = np.inf
        self._count[slot] += len(qtys)
        s = math.fsum(qtys.tolist())
        v = float(self._vol[slot])
        t = v + s
        # Neumaier: keep what the addition rounded away.
        self._comp[slot] += (v - t) + s if abs(v) >= abs(s) else (s - t) + v
        self._vol[slot] = t
        hi = float(prices.max())
        lo = float(prices.min())
        if hi > self._high[slot]:
            self._high[slot] = hi
        if lo < self._low[slot]:
            self._low[slot] = lo
        if minute < self._closed_end:
            self._closed_end = -1  # a late trade changed a closed minute: re-aggregate

    def snapshot(self, now_ns: int) -> Window:
        """The figures of the window ending at the clock's minute (or the newest trade's)."""
        end = max(self._end, now_ns // MINUTE_NS)
        if end != self._closed_end:
            self._aggregate_closed(end)
        count, vol, high, low = self._closed
        slot = end % _SLOTS
        if self._minute[slot] == end:
            count += int(self._count[slot])
            vol = math.fsum((vol, float(self._vol[slot]), float(self._comp[slot])))
            high = max(high, float(self._high[slot]))
            low = min(low, float(self._low[slot]))
        if not count:
            return Window(0.0, None, None, 0)
        return Window(vol, high, low, count)

    def _aggregate_closed(self, end: int) -> None:
        """Sum the whole minutes end-MINUTES .. end-1 afresh (once per minute, or after a late trade)."""
        m = self._minute
        live = (m >= end - MINUTES) & (m < end)
        if live.any():
            parts = np.concatenate((self._vol[live], self._comp[live])).tolist()
            self._closed = (
                int(self._count[live].sum()),
                math.fsum(parts),
                float(self._high[live].max()),
                float(self._low[live].min()),
            )
        else:
            self._closed = (0, 0.0, -math.inf, math.inf)
        self._closed_end = end
