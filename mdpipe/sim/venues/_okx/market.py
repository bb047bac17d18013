"""The synthetic OKX market: the seeded book model, pushed as `books`, `bbo-tbt`, `books5`, `trades`.

Every matching-engine step of an instrument gets a seqId (growing, in uneven steps, as on
OKX); `bbo-tbt` and `books5` carry the seqId of the step they show, `books` pushes every
`books_ms` the levels changed since its previous push with `prevSeqId` = that push's seqId.
So the book after the `books` push with seqId S has the top the `bbo-tbt` with seqId S (or
the last one before it) shows. Legacy mode (data as recorded before 2026) puts the book's
checksum on every `books` push and leaves seqId/prevSeqId out of some updates; current
mode sends checksum 0. An instrument idle for `keepalive_s` gets the keep-alive push
(seqId == prevSeqId, no levels).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from mdpipe.sim import clock
from mdpipe.sim.faults import FaultSchedule
from mdpipe.sim.hub import Hub
from mdpipe.sim.instruments import FUTURES
from mdpipe.sim.market import BookEvent, SymbolMarket
from mdpipe.sim.rolling import Kline
from mdpipe.sim.source import Feed
from mdpipe.sim.venues._okx.tickers import (
    CANDLE_PUSH_S,
    FUNDING_S,
    MARK_IDLE_S,
    MARK_S,
    OI_S,
    TICKERS_S,
    OkxTicker,
    candle_push,
)
from mdpipe.sim.venues._okx.wire import (
    CANDLE_CHANNELS,
    OkxInstrument,
    book_levels,
    books_push,
    changed_levels,
    checksum_of,
    rest_books,
    top_push,
    trades_push,
)

_MAX_BACKLOG_S = 1.0


def stream(channel: str, inst_id: str) -> str:
    """The hub's name of one subscription."""
    return f"{channel}:{inst_id}"


class _Inst:
    """One instrument's market and what its `books` channel has pushed."""

    __slots__ = (
        "inst",
        "sm",
        "pushed_seq",
        "bids",
        "asks",
        "last_seq",
        "last_push",
        "gap_left",
        "frozen_until",
    )

    def __init__(self, inst: OkxInstrument, sm: SymbolMarket) -> None:
        self.inst = inst
        self.sm = sm
        self.pushed_seq = sm.last_id  # the seqId of the last books push (or the start)
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.last_seq: int | None = None  # newest step not pushed on books yet
        self.last_push = 0.0
        self.gap_left = 0
        self.frozen_until = 0.0


class OkxMarket(Feed):
    """Paces the model to `rate` steps/s and publishes what OKX would push."""

    def __init__(
        self,
        instruments: list[OkxInstrument],
        hub: Hub,
        seed: int,
        levels: int,
        rate: float,
        books_ms: int,
        legacy: bool,
        keepalive_s: float,
        tick: float,
        schedule: FaultSchedule,
        on_due: Callable[[float], None],
    ) -> None:
        super().__init__(hub, schedule, on_due)
        self.rate = rate
        self.books_ms = books_ms
        self.legacy = legacy
        self.keepalive_s = keepalive_s
        self.tick = tick
        self.insts = {
            i.inst_id: _Inst(i, SymbolMarket(i.spec, FUTURES, seed, levels)) for i in instruments
        }
        self.symbols = set(self.insts)
        self.tickers = {i: OkxTicker(st.inst) for i, st in self.insts.items()}
        # (channel, instId) -> the open candle (None between intervals), once subscribed.
        self.candles: dict[tuple[str, str], Kline | None] = {}
        self._candles_pushed_at = 0.0
        self._order = list(self.insts.values())
        self._rng = random.Random(f"{seed}:okx:schedule")
        self._legacy_rng = random.Random(f"{seed}:okx:legacy")
        self.produced = 0
        self.pushes = 0
        self.keepalives = 0
        self.gapped = 0
        self.seqless = 0
        self._silent_until = 0.0
        self._t0 = 0.0
        self._next_books = 0.0
        self._started_at = 0.0

    # ----- what clients are sent on subscribe and over REST -------------------------------

    def snapshot(self, inst_id: str, now_ms: int, now: float | None = None) -> bytes:
        """The in-band snapshot for a new subscriber: pending changes are pushed first, so it
        is the book at the last push's seqId and the next update continues it."""
        st = self.insts[inst_id]
        self._push_books(st, asyncio.get_running_loop().time() if now is None else now, now_ms)
        bids, asks = book_levels(st.inst, st.sm.book, 400)
        checksum = checksum_of(st.inst, st.sm.book) if self.legacy else 0
        return books_push(inst_id, "snapshot", asks, bids, now_ms, checksum, -1, st.pushed_seq)

    def rest(self, inst_id: str, sz: int, now_ms: int) -> bytes:
        """The REST books answer: the engine's book now, with the newest step's seqId."""
        st = self.insts[inst_id]
        bids, asks = book_levels(st.inst, st.sm.book, sz)
        return rest_books(asks, bids, now_ms, st.sm.last_id)

    def last_seq(self, inst_id: str) -> int:
        """The seqId of the last books push."""
        return self.insts[inst_id].pushed_seq

    # ----- faults -------------------------------------------------------------------------

    def gap(self, inst_id: str, count: int) -> None:
        """Leave the next `count` books pushes of `inst_id` out (their seqIds still advance)."""
        self.insts[inst_id].gap_left += count

    def silence(self, seconds: float, inst_id: str | None) -> None:
        """Push nothing (for one instrument, or at all) for `seconds`; no gap follows."""
        until = asyncio.get_running_loop().time() + seconds
        if inst_id is None:
            self._silent_until = max(self._silent_until, until)
        else:
            st = self.insts[inst_id]
            st.frozen_until = max(st.frozen_until, until)

    def silent(self) -> bool:
        """True while a silence fault holds the whole feed (pings then go unanswered too)."""
        return asyncio.get_running_loop().time() < self._silent_until

    def market_time(self) -> float:
        """Seconds of simulated time (steps / rate): drives the fault schedule."""
        return self.produced / self.rate

    # ----- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Generate and publish until cancelled (after `started`)."""
        loop = asyncio.get_running_loop()
        await self.started.wait()
        self.begin(loop.time())
        while True:
            now = loop.time()
            if now < self._silent_until:
                await asyncio.sleep(min(self._silent_until - now, 0.05))
                self._t0 += loop.time() - now  # market time stands still: no burst after
                self._next_books = loop.time()
                continue
            self.advance(now, clock.now_ms())
            self.hub.flush()
            await asyncio.sleep(self.tick)

    def begin(self, now: float) -> None:
        """Start the market clock at `now` (seconds, any monotonic origin)."""
        self._t0 = self._started_at = self._next_books = now
        for st in self._order:
            st.last_push = now

    def advance(self, now: float, now_ms: int) -> None:
        """Run the market up to `now`: the steps due at `rate`, then the books pushes due."""
        due = (now - self._t0) * self.rate - self.produced
        if due > self.rate * _MAX_BACKLOG_S:
            self._t0 = now - self.produced / self.rate
            due = self.rate * self.tick
        if due >= 1:
            self._generate(int(due), now, now_ms)
        if now >= self._next_books:
            for st in self._order:
                if st.frozen_until <= now:
                    self._push_books(st, now, now_ms)
                    if self.keepalive_s and now - st.last_push >= self.keepalive_s:
                        self._keepalive(st, now, now_ms)
            period = self.books_ms / 1000.0
            self._next_books = max(self._next_books + period, now) if period else now
        self._push_tickers(now, now_ms)
        if self.candles:
            self._push_candles(now, now_ms)

    def _candle_trades(self, st: _Inst, ev: BookEvent, now_ms: int) -> None:
        """Add the event's trades to each subscribed candle, closing one the time has left."""
        inst = st.inst
        for channel, interval in CANDLE_CHANNELS.items():
            key = (channel, inst.inst_id)
            if key not in self.candles:
                continue
            k = self.candles[key]
            for agg in ev.aggs:
                if k is not None and not k.contains(now_ms):
                    self.hub.publish(
                        stream(channel, inst.inst_id), candle_push(channel, inst, k, True)
                    )
                    k = None
                buy = not agg.buyer_maker
                if k is None:
                    k = Kline.first(interval, agg.price, agg.lots, agg.last_id, now_ms, buy)
                else:
                    k.add(agg.price, agg.lots, agg.last_id, buy)
            self.candles[key] = k

    def _push_candles(self, now: float, now_ms: int) -> None:
        """Close the candles whose interval is over; push the open ones every half second."""
        due = now - self._candles_pushed_at >= CANDLE_PUSH_S
        if due:
            self._candles_pushed_at = now
        for (channel, inst_id), k in self.candles.items():
            if k is None:
                continue  # an interval without trades sends no candle
            closed = not k.contains(now_ms)
            if closed or due:
                inst = self.insts[inst_id].inst
                self.hub.publish(stream(channel, inst_id), candle_push(channel, inst, k, closed))
            if closed:
                self.candles[(channel, inst_id)] = None

    def on_subscribe(self, channel: str, inst_id: str, now_ms: int) -> bytes | None:
        """What OKX sends a new `funding-rate` subscriber at once: the current rate. A candle
        subscription starts that candle's building."""
        if channel in CANDLE_CHANNELS:
            self.candles.setdefault((channel, inst_id), None)
            return None
        if channel != "funding-rate":
            return None
        return self.tickers[inst_id].funding_push(now_ms)

    def _push_tickers(self, now: float, now_ms: int) -> None:
        """tickers, mark-price, open-interest and funding-rate, each at its own pace."""
        hub = self.hub
        for inst_id, t in self.tickers.items():
            if self.insts[inst_id].frozen_until > now or not t.first:
                continue
            name = stream("tickers", inst_id)
            if t.changed and now >= t.next_at["tickers"] and hub.wants(name):
                hub.publish(name, t.tickers(now_ms))
                t.changed = False
                t.next_at["tickers"] = now + TICKERS_S
            if not t.inst.swap:
                continue
            name = stream("mark-price", inst_id)
            if now >= t.next_at["mark-price"] and hub.wants(name):
                mark = t.mark_price()
                if mark != t.mark or now - t.mark_pushed_at >= MARK_IDLE_S:
                    hub.publish(name, t.mark_push(mark, now_ms))
                    t.mark, t.mark_pushed_at = mark, now
                t.next_at["mark-price"] = now + MARK_S
            name = stream("open-interest", inst_id)
            if now >= t.next_at["open-interest"] and hub.wants(name):
                hub.publish(name, t.oi_push(now_ms))
                t.next_at["open-interest"] = now + OI_S
            name = stream("funding-rate", inst_id)
            if (not t.funding_at or now - t.funding_at >= FUNDING_S) and hub.wants(name):
                hub.publish(name, t.funding_push(now_ms))
                t.funding_at = now

    def _generate(self, n: int, now: float, now_ms: int) -> None:
        order = self._order
        cap = max(200, int(self.rate * 0.05))
        for _ in range(min(n, cap)):
            st = self._rng.choice(order)
            if st.frozen_until > now:
                continue
            ev = st.sm.step()
            self._publish_step(st, ev, now_ms)
            self.produced += 1
            if self.books_ms == 0:
                self._push_books(st, now, now_ms)
            if self.produced / self.rate >= self.schedule.next_due:
                self.on_due(self.produced / self.rate)
                if self._silent_until > now:
                    break

    def _publish_step(self, st: _Inst, ev: BookEvent, now_ms: int) -> None:
        hub = self.hub
        inst = st.inst
        inst_id = inst.inst_id
        seq = ev.last_id
        name = stream("trades", inst_id)
        if ev.aggs and hub.wants(name):
            for agg in ev.aggs:
                side = "sell" if agg.buyer_maker else "buy"
                count = agg.last_id - agg.first_id + 1
                hub.publish(
                    name,
                    trades_push(
                        inst_id,
                        agg.last_id,
                        inst.px(agg.price),
                        inst.sz(agg.lots),
                        side,
                        now_ms,
                        count,
                        seq,
                    ),
                )
        if ev.top_changed:
            name = stream("bbo-tbt", inst_id)
            if hub.wants(name):
                bids, asks = book_levels(inst, st.sm.book, 1)
                hub.publish(name, top_push("bbo-tbt", inst_id, asks, bids, now_ms, seq))
        name = stream("books5", inst_id)
        if hub.wants(name):
            bids, asks = book_levels(inst, st.sm.book, 5)
            hub.publish(name, top_push("books5", inst_id, asks, bids, now_ms, seq))
        st.bids.update(ev.bids)
        st.asks.update(ev.asks)
        st.last_seq = seq
        self.tickers[inst_id].on_event(ev, st.sm.top)
        if self.candles and ev.aggs:
            self._candle_trades(st, ev, now_ms)

    def _push_books(self, st: _Inst, now: float, now_ms: int) -> None:
        """Push the changes since the previous books push (one update, or none if unchanged)."""
        seq = st.last_seq
        if seq is None:
            return
        prev = st.pushed_seq
        st.pushed_seq = seq
        st.last_seq = None
        bids, asks = st.bids, st.asks
        st.bids, st.asks = {}, {}
        st.last_push = now
        if st.gap_left:
            st.gap_left -= 1
            self.gapped += 1
            return
        name = stream("books", st.inst.inst_id)
        if not self.hub.wants(name):
            return
        checksum = 0
        send_prev: int | None = prev
        send_seq: int | None = seq
        if self.legacy:
            checksum = checksum_of(st.inst, st.sm.book)
            if self._legacy_rng.random() < 0.1:
                send_prev = send_seq = None  # recorded before every message carried seqId
                self.seqless += 1
        payload = books_push(
            st.inst.inst_id,
            "update",
            changed_levels(st.inst, asks, descending=False),
            changed_levels(st.inst, bids, descending=True),
            now_ms,
            checksum,
            send_prev,
            send_seq,
        )
        self.hub.publish(name, payload)
        self.pushes += 1

    def _keepalive(self, st: _Inst, now: float, now_ms: int) -> None:
        st.last_push = now
        name = stream("books", st.inst.inst_id)
        if self.hub.wants(name):
            checksum = checksum_of(st.inst, st.sm.book) if self.legacy else 0
            seq = st.pushed_seq
            self.hub.publish(
                name, books_push(st.inst.inst_id, "update", [], [], now_ms, checksum, seq, seq)
            )
            self.keepalives += 1

    def stats(self) -> dict[str, Any]:
        """Counters for /_sim/stats."""
        elapsed = asyncio.get_running_loop().time() - self._started_at if self._started_at else 0
        return {
            "started": self.started.is_set(),
            "rate_target": self.rate,
            "rate_actual": round(self.produced / elapsed, 1) if elapsed > 0 else 0.0,
            "steps": self.produced,
            "books_pushes": self.pushes,
            "keepalives": self.keepalives,
            "pushes_gapped": self.gapped,
            "pushes_without_seq_id": self.seqless,
            "market_time_s": round(self.market_time(), 3),
            "symbols": {
                inst_id: {
                    "seq_id": st.pushed_seq,
                    "bid_levels": len(st.sm.book.bids),
                    "ask_levels": len(st.sm.book.asks),
                }
                for inst_id, st in self.insts.items()
            },
        }
