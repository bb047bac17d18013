"""Candles (OHLCV per interval) built from committed trades by exchange trade time.

Rules (docs: README "Candles"):
- An interval is [open, open + interval) of the trade's exchange time; open is a multiple
  of the interval since the epoch (UTC), like the venues' klines.
- A candle is published once, when it closes: at the first trade of a later interval, or
  when the wall clock passes its end by `grace` (a quiet market). An interval without a
  trade publishes nothing: a gap in open_ts_ns means no trade, never a guessed price.
- A late trade (its interval already published) amends the symbol's last published candle
  when it belongs to it: the candle is published again with revision + 1 and the AMENDED
  flag (high, low, volumes and count include the trade; open and close stay). A trade older than that is counted (`candles_late_dropped`) and dropped.
- A candle whose interval began before its writer (re)started is flagged RESTART: trades
  from before the start are not in it. At shutdown the open candles are published with
  the OPEN flag.
"""

from __future__ import annotations

import re

from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter

_UNITS = {"s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_INTERVAL = re.compile(r"([1-9]\d*)([smh])")

# Indices into an open candle (a list: cheaper than a numpy record on the trade path).
_OPEN_TS, _O, _H, _LO, _C, _V, _QV, _TBV, _N, _FIRST, _LAST, _RECV, _FLAGS, _REV = range(14)


def parse_interval(text: str) -> int:
    """'1s' / '1m' / '15m' / '1h' -> nanoseconds; ValueError naming the text otherwise."""
    m = _INTERVAL.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"candle interval {text!r}: write it like 1s, 5s, 1m, 15m or 1h")
    ns = int(m.group(1)) * _UNITS[m.group(2)]
    if (24 * 3_600_000_000_000) % ns:
        raise ValueError(f"candle interval {text!r} does not divide a day")
    return ns


def ring_name(interval: str, feed: str, shard: int) -> str:
    """The candle ring of one interval of one ingest shard, e.g. candles_1m.usdm.0."""
    return f"candles_{interval}.{feed}.{shard}"


class CandleBuilder:
    """One interval's candles for every symbol of one writer, published into a candle ring."""

    def __init__(
        self, writer: RingWriter, interval_ns: int, n_symbols: int, start_ns: int, grace_ns: int
    ) -> None:
        self.w = writer
        self.interval = interval_ns
        self.grace = grace_ns
        self.start_ns = start_ns  # wall clock when the writer (re)started
        self.open: list[list | None] = [None] * n_symbols
        self.last: list[list | None] = [None] * n_symbols  # last published, for amendments
        self.published = 0
        self.amended = 0
        self.late_dropped = 0

    def on_trade(
        self,
        sid: int,
        ts_ns: int,
        recv_ns: int,
        trade_id: int,
        first_id: int,
        last_id: int,
        price: float,
        qty: float,
        buy: bool,
    ) -> None:
        """Add one committed trade (in the venue's trade order)."""
        start = ts_ns - ts_ns % self.interval
        cur = self.open[sid]
        if cur is not None and cur[_OPEN_TS] == start:
            _add(cur, recv_ns, last_id, price, qty, buy, last_id - first_id + 1)
            return
        if cur is not None and start < cur[_OPEN_TS]:
            self._late(sid, start, recv_ns, trade_id, first_id, last_id, price, qty, buy)
            return
        if cur is not None:
            self._publish(sid, cur)
        done = self.last[sid]
        if cur is None and done is not None and start <= done[_OPEN_TS]:
            self._late(sid, start, recv_ns, trade_id, first_id, last_id, price, qty, buy)
            return
        flags = L.FLAG_CANDLE_RESTART if start < self.start_ns else 0
        n = last_id - first_id + 1
        self.open[sid] = [
            start,
            price,
            price,
            price,
            price,
            qty,
            price * qty,
            qty if buy else 0.0,
            n,
            first_id,
            last_id,
            recv_ns,
            flags,
            0,
        ]

    def _late(
        self,
        sid: int,
        start: int,
        recv_ns: int,
        trade_id: int,
        first_id: int,
        last_id: int,
        price: float,
        qty: float,
        buy: bool,
    ) -> None:
        done = self.last[sid]
        if done is None or done[_OPEN_TS] != start:
            self.late_dropped += 1
            return
        close = done[_C]  # a late trade is not the candle's last: its close stays
        _add(done, recv_ns, last_id, price, qty, buy, last_id - first_id + 1)
        done[_C] = close
        done[_FIRST] = min(done[_FIRST], first_id)
        done[_REV] += 1
        done[_FLAGS] |= L.FLAG_CANDLE_AMENDED
        self.amended += 1
        self._commit(sid, done)

    def on_clock(self, now_ns: int) -> None:
        """Publish every open candle whose interval ended more than `grace` ago."""
        limit = now_ns - self.grace - self.interval
        for sid, cur in enumerate(self.open):
            if cur is not None and cur[_OPEN_TS] <= limit:
                self._publish(sid, cur)

    def flush_open(self) -> None:
        """Publish the candles still open, flagged OPEN (the writer is stopping)."""
        for sid, cur in enumerate(self.open):
            if cur is not None:
                cur[_FLAGS] |= L.FLAG_CANDLE_OPEN
                self._publish(sid, cur)

    def _publish(self, sid: int, cur: list) -> None:
        self.open[sid] = None
        self.last[sid] = cur
        self.published += 1
        self._commit(sid, cur)

    def _commit(self, sid: int, c: list) -> None:
        rec = self.w.record
        rec["symbol_id"] = sid
        rec["flags"] = c[_FLAGS]
        rec["open_ts_ns"] = c[_OPEN_TS]
        rec["interval_ns"] = self.interval
        rec["recv_ts_ns"] = c[_RECV]
        rec["first_trade_id"] = c[_FIRST]
        rec["last_trade_id"] = c[_LAST]
        rec["trades"] = c[_N]
        rec["open"] = c[_O]
        rec["high"] = c[_H]
        rec["low"] = c[_LO]
        rec["close"] = c[_C]
        rec["volume"] = c[_V]
        rec["quote_volume"] = c[_QV]
        rec["taker_buy_volume"] = c[_TBV]
        rec["revision"] = c[_REV]
        self.w.commit(sid)


def _add(c: list, recv_ns: int, last_id: int, price: float, qty: float, buy: bool, n: int) -> None:
    if price > c[_H]:
        c[_H] = price
    if price < c[_LO]:
        c[_LO] = price
    c[_C] = price
    c[_V] += qty
    c[_QV] += price * qty
    if buy:
        c[_TBV] += qty
    c[_N] += n
    if last_id > c[_LAST]:
        c[_LAST] = last_id
    c[_RECV] = recv_ns
