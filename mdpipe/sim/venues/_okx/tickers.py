"""OKX `tickers`, `mark-price`, `funding-rate` and `open-interest` for the simulator.

Kept exactly (ticks, lots) from the synthetic market and written as OKX writes them. Pace:
`tickers` at most every 100 ms when a trade or the best bid/ask changed; `mark-price` every
200 ms when it changed, else every 10 s; `open-interest` every 3 s; `funding-rate` at
subscribe and every 30 s. The last three are swap channels.
"""

from __future__ import annotations

import orjson

from mdpipe.sim.market import BookEvent
from mdpipe.sim.rolling import Kline
from mdpipe.sim.venues._okx.wire import OkxInstrument, okx_number

TICKERS_S, MARK_S, MARK_IDLE_S, OI_S, FUNDING_S = 0.1, 0.2, 10.0, 3.0, 30.0
FUNDING_MS = 8 * 3600 * 1000
SWAP_CHANNELS = ("mark-price", "funding-rate", "open-interest")
CHANNELS = ("tickers", *SWAP_CHANNELS)


def _push(channel: str, inst_id: str, item: dict) -> bytes:
    return orjson.dumps({"arg": {"channel": channel, "instId": inst_id}, "data": [item]})


class OkxTicker:
    """One instrument's figures and when each channel last pushed."""

    def __init__(self, inst: OkxInstrument) -> None:
        self.inst = inst
        self.first = self.last = self.high = self.low = self.last_lots = 0
        self.volume = self.quote = 0
        self.oi = 80_000
        self.top = (0, 0, 0, 0)
        self.changed = False
        self.mark = ""
        self.next_at = {"tickers": 0.0, "mark-price": 0.0, "open-interest": 0.0}
        self.mark_pushed_at = 0.0
        self.funding_at = 0.0

    def on_event(self, ev: BookEvent, top: tuple[int, int, int, int]) -> None:
        for agg in ev.aggs:
            if not self.first:
                self.first = self.high = self.low = agg.price
            self.last, self.last_lots = agg.price, agg.lots
            self.high, self.low = max(self.high, agg.price), min(self.low, agg.price)
            self.volume += agg.lots
            self.quote += agg.price * agg.lots
            self.oi += agg.lots // 3
            self.changed = True
        if top != self.top:
            self.top = top
            self.changed = True

    def tickers(self, ts: int) -> bytes:
        inst = self.inst
        bid, bid_lots, ask, ask_lots = self.top
        spec = inst.spec
        quote = okx_number(
            self.quote * spec.tick * spec.step, spec.price_decimals + spec.qty_decimals
        )
        # Spot: vol24h in base, volCcy24h in quote; swap: vol24h contracts, volCcy24h base.
        vol_ccy = inst.sz(self.volume) if inst.swap else quote
        return _push(
            "tickers",
            inst.inst_id,
            {
                "instType": "SWAP" if inst.swap else "SPOT",
                "instId": inst.inst_id,
                "last": inst.px(self.last),
                "lastSz": inst.sz(self.last_lots),
                "askPx": inst.px(ask),
                "askSz": inst.sz(ask_lots),
                "bidPx": inst.px(bid),
                "bidSz": inst.sz(bid_lots),
                "open24h": inst.px(self.first),
                "high24h": inst.px(self.high),
                "low24h": inst.px(self.low),
                "volCcy24h": vol_ccy,
                "vol24h": inst.sz(self.volume),
                "ts": str(ts),
                "sodUtc0": inst.px(self.first),
                "sodUtc8": inst.px(self.first),
            },
        )

    def mark_price(self) -> str:
        bid, _, ask, _ = self.top
        return self.inst.px((bid + ask) // 2)

    def mark_push(self, mark: str, ts: int) -> bytes:
        item = {"instType": "SWAP", "instId": self.inst.inst_id, "markPx": mark, "ts": str(ts)}
        return _push("mark-price", self.inst.inst_id, item)

    def funding_push(self, ts: int) -> bytes:
        due = (ts // FUNDING_MS + 1) * FUNDING_MS
        rate = "0.0001" if (ts // 60_000) % 2 else "-0.00005"
        return _push(
            "funding-rate",
            self.inst.inst_id,
            {
                "formulaType": "noRate",
                "fundingRate": rate,
                "fundingTime": str(due),
                "impactValue": "",
                "instId": self.inst.inst_id,
                "instType": "SWAP",
                "interestRate": "0",
                "maxFundingRate": "0.00375",
                "method": "current_period",
                "minFundingRate": "-0.00375",
                "nextFundingRate": "",
                "nextFundingTime": str(due + FUNDING_MS),
                "premium": "0.0001",
                "settFundingRate": "0.0001",
                "settState": "settled",
                "ts": str(ts),
            },
        )

    def oi_push(self, ts: int) -> bytes:
        inst = self.inst
        oi = inst.sz(self.oi)
        return _push(
            "open-interest",
            inst.inst_id,
            {
                "instId": inst.inst_id,
                "instType": "SWAP",
                "oi": oi,
                "oiCcy": oi,
                "oiUsd": oi,
                "ts": str(ts),
            },
        )


# The field each `malformed` variant breaks, per channel: one the client must read.
_MALFORMED_KEY = {
    "tickers": "last",
    "mark-price": "markPx",
    "funding-rate": "fundingTime",
    "open-interest": "oi",
}


def malformed_push(variant: str, channel: str, inst_id: str, ts: int, oversized: int) -> bytes:
    """A bad push of a ticker `channel` (tickers, mark-price, funding-rate, open-interest) of
    one `malformed` fault variant; variant "none" gives the well-formed push they break."""
    key = _MALFORMED_KEY[channel]
    item: dict = {"instId": inst_id, key: "100", "ts": str(ts)}
    if channel == "funding-rate":
        item.update({"fundingRate": "0.0001", key: str(ts + FUNDING_MS)})
    if variant == "nan_price":
        item[key] = "NaN"
    elif variant == "negative_price":
        item[key] = "-1"
    elif variant == "missing_field":
        del item["ts"]
    elif variant == "wrong_type":
        item[key] = 1.5
    elif variant == "unknown_stream":
        channel += "-unknown"
    elif variant == "oversized":
        item = {"pad": "x" * max(oversized - 200, 0), "ts": item["ts"]}
    body = _push(channel, inst_id, item)
    if variant == "truncated":
        return body[: len(body) // 2]
    return body


CANDLE_PUSH_S = 0.5  # an open candle is pushed at most this often


def candle_push(channel: str, inst: OkxInstrument, k: Kline, closed: bool) -> bytes:
    """A candle row `[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]`: vol in contracts
    (swap) or base (spot), volCcy in base (swap) or quote (spot), volCcyQuote in quote."""
    spec = inst.spec
    quote = okx_number(k.quote * spec.tick * spec.step, spec.price_decimals + spec.qty_decimals)
    vol = inst.sz(k.volume)
    row = [
        str(k.start_ms),
        inst.px(k.open),
        inst.px(k.high),
        inst.px(k.low),
        inst.px(k.close),
        vol,
        vol if inst.swap else quote,
        quote,
        "1" if closed else "0",
    ]
    return orjson.dumps({"arg": {"channel": channel, "instId": inst.inst_id}, "data": [row]})
