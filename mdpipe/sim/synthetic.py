"""Synthetic source: paces the market model to --rate and publishes every stream it implies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mdpipe.sim import clock
from mdpipe.sim.faults import FaultSchedule
from mdpipe.sim.formats import Encoder
from mdpipe.sim.hub import Hub
from mdpipe.sim.instruments import FUTURES
from mdpipe.sim.market import BookEvent, MarketModel
from mdpipe.sim.rolling import KLINE_INTERVALS_MS, DayStats, Kline
from mdpipe.sim.source import Source
from mdpipe.sim.streams import (
    DAY_TICKER,
    DAY_TICKER_MS,
    DEPTH,
    KLINE,
    KLINE_PUSH_MS,
    MARK_PRICE,
    PARTIAL,
    depth_stream_name,
    parse_stream,
)

_MAX_BACKLOG_S = 1.0  # falling further behind than this drops the backlog instead of bursting
_FUNDING_MS = 8 * 3600 * 1000


class _Window:
    """Changes of one symbol accumulated for one update speed (100 ms, 250 ms, ...)."""

    __slots__ = (
        "symbol",
        "diff_name",
        "partials",
        "prev",
        "first",
        "last",
        "bids",
        "asks",
        "gapped",
    )

    def __init__(self, symbol: str, market: str, interval_ms: int, prev: int) -> None:
        self.symbol = symbol
        self.diff_name = depth_stream_name(symbol, market, interval_ms)
        self.partials = [
            (n, depth_stream_name(symbol, market, interval_ms, n)) for n in (5, 10, 20)
        ]
        self.prev = prev
        self.first: int | None = None
        self.last = 0
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.gapped = False

    def add(self, ev: BookEvent) -> None:
        if self.first is None:
            self.first = ev.first_id
        self.last = ev.last_id
        self.bids.update(ev.bids)
        self.asks.update(ev.asks)
        self.gapped |= ev.gap


class _Names:
    """Per-event stream names of one symbol."""

    __slots__ = ("realtime", "ticker", "trade", "agg")

    def __init__(self, symbol: str, market: str) -> None:
        low = symbol.lower()
        self.realtime = f"{low}@depth@0ms" if market == FUTURES else None
        self.ticker = f"{low}@bookTicker"
        self.trade = f"{low}@trade"
        self.agg = f"{low}@aggTrade"


class SyntheticSource(Source):
    """Generates the market at `rate` messages/s on the per-event streams, batched per tick.

    The per-event streams are <sym>@depth@0ms (futures), @bookTicker and @trade; the rate
    counts their messages whether anyone subscribes or not, so the event sequence depends
    only on the seed. Slower depth streams, partial books and mark prices are derived.
    """

    def __init__(
        self,
        model: MarketModel,
        hub: Hub,
        rate: float,
        tick: float,
        schedule: FaultSchedule,
        on_due: Callable[[float], None],
    ) -> None:
        super().__init__(hub, schedule, on_due)
        self.model = model
        self.market = model.market
        self.symbols = set(model.symbols)
        self.encoder = Encoder(self.market, {s: m.spec for s, m in model.symbols.items()})
        self.rate = rate
        self.tick = tick
        self.produced = 0
        self.events = 0
        self.dropped_backlog_s = 0.0
        self._names = {s: _Names(s, self.market) for s in self.symbols}
        self._windows: dict[tuple[str, int], _Window] = {}
        self._windows_by_interval: dict[int, list[_Window]] = {}
        self._symbol_windows: dict[str, list[_Window]] = {}
        self._marks: dict[int, set[str]] = {}
        self._day = {s: DayStats() for s in self.symbols}  # since the market started
        self._day_subs: set[str] = set()
        self._klines: dict[str, dict[str, Kline | None]] = {}  # symbol -> interval -> open kline
        self._tickers: dict[int, asyncio.Task[None]] = {}
        self._gaps: dict[str, int] = {}
        self._silent_until = 0.0
        self._frozen: dict[str, float] = {}
        self._t0 = 0.0
        self._started_at = 0.0

    def deliverable(self, stream: str) -> bool:
        key = parse_stream(stream, self.market)
        return key is not None and key.symbol in self.symbols

    def on_subscribe(self, stream: str) -> None:
        key = parse_stream(stream, self.market)
        if key is None or key.symbol not in self.symbols or key.interval_ms == 0:
            return
        if key.kind in (DEPTH, PARTIAL) and (key.symbol, key.interval_ms) not in self._windows:
            sm = self.model.symbols[key.symbol]
            window = _Window(key.symbol, self.market, key.interval_ms, sm.last_id)
            self._windows[(key.symbol, key.interval_ms)] = window
            self._windows_by_interval.setdefault(key.interval_ms, []).append(window)
            self._symbol_windows.setdefault(key.symbol, []).append(window)
        elif key.kind == MARK_PRICE:
            self._marks.setdefault(key.interval_ms, set()).add(key.symbol)
        elif key.kind == DAY_TICKER:
            self._day_subs.add(key.symbol)
        elif key.kind == KLINE:
            self._klines.setdefault(key.symbol, {}).setdefault(key.kline, None)
        if key.interval_ms not in self._tickers:
            task = asyncio.get_running_loop().create_task(self._ticker(key.interval_ms))
            self._tickers[key.interval_ms] = task

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self.started.wait()
        self._t0 = self._started_at = loop.time()
        rate = self.rate
        try:
            while True:
                now = loop.time()
                if now < self._silent_until:
                    pause = min(self._silent_until - now, 0.05)
                    await asyncio.sleep(pause)
                    # Market time stands still while silent: no burst when it ends.
                    self._t0 += loop.time() - now
                    continue
                due = (now - self._t0) * rate - self.produced
                if due > rate * _MAX_BACKLOG_S:
                    self.dropped_backlog_s += due / rate
                    self._t0 = now - self.produced / rate
                    due = rate * self.tick
                if due > 0:
                    self._generate(due, now)
                self.hub.flush()
                await asyncio.sleep(self.tick)
        finally:
            for task in self._tickers.values():
                task.cancel()

    def _generate(self, budget: float, now: float) -> None:
        frozen = {s for s, until in self._frozen.items() if until > now} if self._frozen else set()
        event_ms = clock.now_ms()
        model = self.model
        rate = self.rate
        cap = max(200, int(rate * 0.05))
        n = 0
        while budget > 0 and n < cap and self._silent_until <= now:
            sm = model.next_symbol(frozen)
            if sm is None:
                break
            ev = sm.step()
            if self._gaps:
                left = self._gaps.get(ev.symbol)
                if left:
                    ev.gap = True
                    if left == 1:
                        del self._gaps[ev.symbol]
                    else:
                        self._gaps[ev.symbol] = left - 1
            self._publish(ev, event_ms)
            k = ev.messages()
            self.produced += k
            self.events += 1
            budget -= k
            n += 1
            if self.produced / rate >= self.schedule.next_due:
                self.on_due(self.produced / rate)

    def _publish(self, ev: BookEvent, event_ms: int) -> None:
        hub = self.hub
        enc = self.encoder
        sym = ev.symbol
        names = self._names[sym]
        if ev.fills:
            self._count_fills(sym, ev, event_ms)
            if hub.wants(names.trade):
                for fill in ev.fills:
                    hub.publish(names.trade, enc.trade(sym, fill, event_ms, event_ms))
            if hub.wants(names.agg):
                for agg in ev.aggs:
                    hub.publish(names.agg, enc.agg_trade(sym, agg, event_ms, event_ms))
        if names.realtime and not ev.gap and hub.wants(names.realtime):
            payload = enc.depth_diff(
                sym,
                ev.first_id,
                ev.last_id,
                ev.prev_id,
                enc.levels(sym, ev.bids),
                enc.levels(sym, ev.asks),
                event_ms,
                event_ms,
            )
            hub.publish(names.realtime, payload)
        if ev.top_changed and hub.wants(names.ticker):
            hub.publish(names.ticker, enc.book_ticker(sym, ev.last_id, ev.top, event_ms, event_ms))
        for window in self._symbol_windows.get(sym, ()):
            window.add(ev)

    def _count_fills(self, sym: str, ev: BookEvent, event_ms: int) -> None:
        """Add the event's fills to the day statistics and the open klines (closing any
        kline the fills' trade time has left, first)."""
        day = self._day[sym]
        for fill in ev.fills:
            day.add(fill.price, fill.lots, fill.trade_id, event_ms)
        klines = self._klines.get(sym)
        if not klines:
            return
        for name, k in klines.items():
            for fill in ev.fills:
                if k is not None and not k.contains(event_ms):
                    self._send_kline(sym, name, k, event_ms, True)
                    k = None
                buy = not fill.buyer_maker
                if k is None:
                    k = Kline.first(
                        KLINE_INTERVALS_MS[name],
                        fill.price,
                        fill.lots,
                        fill.trade_id,
                        event_ms,
                        buy,
                    )
                else:
                    k.add(fill.price, fill.lots, fill.trade_id, buy)
            klines[name] = k

    def _send_kline(self, sym: str, name: str, k: Kline, event_ms: int, closed: bool) -> None:
        stream = f"{sym.lower()}@kline_{name}"
        if self.hub.wants(stream):
            self.hub.publish(stream, self.encoder.kline(sym, name, k, event_ms, closed))

    def _push_klines(self, event_ms: int) -> None:
        """Every open kline: closed (x true) once its interval is over, else as it stands."""
        for sym, klines in self._klines.items():
            for name, k in klines.items():
                if k is None:
                    continue  # an interval without trades sends no kline
                closed = not k.contains(event_ms)
                self._send_kline(sym, name, k, event_ms, closed)
                if closed:
                    klines[name] = None

    async def _ticker(self, interval_ms: int) -> None:
        """Publish the windows and mark prices of one update speed, every interval."""
        loop = asyncio.get_running_loop()
        period = interval_ms / 1000.0
        next_at = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            now = loop.time()
            next_at = max(next_at + period, now)
            if not self.started.is_set() or now < self._silent_until:
                continue
            event_ms = clock.now_ms()
            for window in self._windows_by_interval.get(interval_ms, ()):
                self._flush_window(window, event_ms)
            if interval_ms == KLINE_PUSH_MS:
                self._push_klines(event_ms)
            if interval_ms == DAY_TICKER_MS:
                for sym in self._day_subs:
                    name = f"{sym.lower()}@ticker"
                    day = self._day[sym]
                    if day.count and self.hub.wants(name) and self._frozen.get(sym, 0.0) <= now:
                        top = self.model.symbols[sym].top
                        self.hub.publish(name, self.encoder.day_ticker(sym, day, top, event_ms))
            for sym in self._marks.get(interval_ms, ()):
                name = f"{sym.lower()}@markPrice" + ("@1s" if interval_ms == 1000 else "")
                if self.hub.wants(name) and self._frozen.get(sym, 0.0) <= now:
                    bid, _, ask, _ = self.model.symbols[sym].top
                    funding = (event_ms // _FUNDING_MS + 1) * _FUNDING_MS
                    self.hub.publish(
                        name, self.encoder.mark_price(sym, bid + ask, event_ms, funding)
                    )
            self.hub.flush()

    def _flush_window(self, w: _Window, event_ms: int) -> None:
        if w.first is None:
            return
        hub = self.hub
        enc = self.encoder
        sym = w.symbol
        if not w.gapped and hub.wants(w.diff_name):
            bids, asks = enc.levels(sym, w.bids), enc.levels(sym, w.asks)
            hub.publish(
                w.diff_name,
                enc.depth_diff(sym, w.first, w.last, w.prev, bids, asks, event_ms, event_ms),
            )
        for levels, name in w.partials:
            if hub.wants(name):
                bids, asks = enc.top_levels(sym, self.model.symbols[sym].book, levels)
                hub.publish(
                    name,
                    enc.partial_depth(sym, w.first, w.last, w.prev, bids, asks, event_ms, event_ms),
                )
        w.prev = w.last
        w.first = None
        w.bids = {}
        w.asks = {}
        w.gapped = False

    async def snapshot(self, symbol: str, limit: int) -> bytes:
        sm = self.model.symbols[symbol]
        bids, asks = self.encoder.top_levels(symbol, sm.book, limit)
        now_ms = clock.now_ms()
        return self.encoder.snapshot(sm.last_id, bids, asks, now_ms, now_ms)

    def last_update_id(self, symbol: str) -> int:
        return self.model.symbols[symbol].last_id

    def gap(self, symbol: str, count: int) -> None:
        self._gaps[symbol] = self._gaps.get(symbol, 0) + count

    def silence(self, seconds: float, symbol: str | None) -> None:
        until = asyncio.get_running_loop().time() + seconds
        if symbol is None:
            self._silent_until = max(self._silent_until, until)
        else:
            self._frozen[symbol] = max(self._frozen.get(symbol, 0.0), until)

    def market_time(self) -> float:
        return self.produced / self.rate

    def stats(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        elapsed = loop.time() - self._started_at if self.started.is_set() else 0.0
        symbols = {}
        for sym, sm in self.model.symbols.items():
            bid, bid_lots, ask, ask_lots = sm.top
            symbols[sym] = {
                "last_update_id": sm.last_id,
                "best_bid": sm.spec.price_str(bid),
                "best_ask": sm.spec.price_str(ask),
                "bid_levels": len(sm.book.bids),
                "ask_levels": len(sm.book.asks),
            }
        return {
            "started": self.started.is_set(),
            "rate_target": self.rate,
            "rate_actual": round(self.produced / elapsed, 1) if elapsed > 0 else 0.0,
            "events": self.events,
            "messages_generated": self.produced,
            "market_time_s": round(self.market_time(), 3),
            "backlog_dropped_s": round(self.dropped_backlog_s, 3),
            "symbols": symbols,
        }
