"""Bybit `tickers.{symbol}` for the simulator: each symbol's ticker fields as decimal strings,
kept from the synthetic market, served as Bybit lays them out.

Linear pushes every 100 ms a `delta` holding only the fields that changed since the last
push (after a `snapshot` to each new subscriber); spot pushes full snapshots every 50 ms and
has no bid/ask, mark, funding or open interest. `cs` is the symbol's cross sequence.
"""

from __future__ import annotations

import orjson

from mdpipe.sim.instruments import SymbolSpec, fmt_units
from mdpipe.sim.malformed import break_price_text
from mdpipe.sim.market import BookEvent

FUNDING_MS = 8 * 3600 * 1000
LINEAR_PUSH_MS = 100
SPOT_PUSH_MS = 50


class TickerBook:
    """One symbol's ticker: exact integers (ticks, lots) turned into Bybit's strings."""

    def __init__(self, spec: SymbolSpec, linear: bool) -> None:
        self.spec, self.linear = spec, linear
        self.first = self.last = self.high = self.low = 0
        self.volume = self.quote = 0  # lots; ticks x lots
        self.open_interest = 50_000  # lots: grows by half of each fill, a plausible walk
        self.top = (0, 0, 0, 0)
        self.pushed: dict[str, str] = {}  # the state as of the last push (deltas diff against it)

    def on_event(self, ev: BookEvent, top: tuple[int, int, int, int]) -> None:
        self.top = top
        for fill in ev.fills:
            if not self.first:
                self.first = self.high = self.low = fill.price
            self.last = fill.price
            self.high, self.low = max(self.high, fill.price), min(self.low, fill.price)
            self.volume += fill.lots
            self.quote += fill.price * fill.lots
            self.open_interest += fill.lots // 2

    def fields(self, now_ms: int) -> dict[str, str]:
        """Every field as Bybit orders them (empty before the first trade: none sent)."""
        if not self.first:
            return {}
        px, qty, spec = self.spec.price_str, self.spec.qty_str, self.spec
        pct = (self.last - self.first) / self.first
        out = {
            "symbol": spec.symbol,
            "lastPrice": px(self.last),
            "highPrice24h": px(self.high),
            "lowPrice24h": px(self.low),
            "prevPrice24h": px(self.first),
            "volume24h": qty(self.volume),
            "turnover24h": fmt_units(
                self.quote * spec.tick * spec.step, spec.price_decimals + spec.qty_decimals
            ),
            "price24hPcnt": f"{pct:.6f}",
        }
        if not self.linear:
            return out
        bid, bid_lots, ask, ask_lots = self.top
        mark = px((bid + ask) // 2)
        out.update(
            {
                "markPrice": mark,
                "indexPrice": mark,
                "openInterest": qty(self.open_interest),
                "nextFundingTime": str((now_ms // FUNDING_MS + 1) * FUNDING_MS),
                "fundingRate": "0.0001" if (now_ms // 60_000) % 2 else "-0.00005",
                "bid1Price": px(bid),
                "bid1Size": qty(bid_lots),
                "ask1Price": px(ask),
                "ask1Size": qty(ask_lots),
            }
        )
        return out

    def changed(self, now_ms: int) -> dict[str, str]:
        """The fields that differ from the last push (always with the symbol); records them."""
        now = self.fields(now_ms)
        delta = {k: v for k, v in now.items() if self.pushed.get(k) != v}
        self.pushed = now
        if delta:
            delta["symbol"] = self.spec.symbol
            delta = {k: delta[k] for k in now if k in delta}  # Bybit's field order
        return delta


def message(symbol: str, kind: str, data: dict[str, str], ts: int, cs: int, linear: bool) -> bytes:
    """A tickers message, compact, fields in Bybit's order (linear: cs and ts after data)."""
    body = ",".join(f'"{k}":"{v}"' for k, v in data.items())
    if linear:
        return (
            f'{{"topic":"tickers.{symbol}","type":"{kind}","data":{{{body}}},"cs":{cs},"ts":{ts}}}'
        ).encode()
    return (
        f'{{"topic":"tickers.{symbol}","ts":{ts},"type":"snapshot","cs":{cs},"data":{{{body}}}}}'
    ).encode()


def malformed(variant: str, symbol: str, ts: int, cs: int, linear: bool, oversized: int) -> bytes:
    """A bad `tickers.{symbol}` message of one `malformed` fault variant, shaped like the topic;
    variant "none" gives the well-formed message the variants break."""
    data = {"symbol": symbol, "lastPrice": "100.0", "volume24h": "1.0"}
    topic = f"tickers.{symbol}"
    if variant == "oversized":
        return orjson.dumps({"topic": topic, "pad": "x" * max(oversized - 100, 0)})
    if variant == "missing_field":
        del data["symbol"]
    good = message(symbol, "snapshot", data, ts, cs, linear)
    broken = break_price_text(good, variant)
    if broken is not None:
        return broken
    if variant == "wrong_type":
        return good.replace(b'"100.0"', b"100.0")
    if variant == "unknown_stream":
        return good.replace(topic.encode(), f"tickers7.{symbol}".encode())
    return good
