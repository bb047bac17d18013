"""Bybit `kline.{interval}.{symbol}` for the simulator, built from its own trades.

The v5 public kline topic: `{"topic":"kline.1.BTCUSDT","data":[{"start","end","interval",
"open","close","high","low","volume","turnover","confirm","timestamp"}],"ts":..,
"type":"snapshot"}`. An interval is [start, end] with end = start + interval - 1 ms, aligned
on UTC multiples of the interval, by the trades' `T`; `volume` is in the base coin, `turnover`
the quote value (price x size of every trade), `timestamp` the last trade's time, `confirm`
true on the candle's last push, once its interval is over (at the first trade after it, or
by the clock). Bybit sends no trade count. The open candle is pushed every second (Bybit:
"1-60s"); an interval without a trade sends no candle.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdpipe.sim.instruments import SymbolSpec, fmt_units
from mdpipe.sim.rolling import Kline

# The minute intervals and the day (UTC); W and M (calendar weeks and months) are not served.
INTERVALS_MS = {
    **{str(m): m * 60_000 for m in (1, 3, 5, 15, 30, 60, 120, 240, 360, 720)},
    "D": 86_400_000,
}
PUSH_MS = 1000


def topic_interval(topic: str) -> tuple[str, str] | None:
    """'kline.1.BTCUSDT' -> ('1', 'BTCUSDT'); None for an interval Bybit does not have."""
    kind, _, rest = topic.partition(".")
    interval, _, symbol = rest.partition(".")
    if kind != "kline" or interval not in INTERVALS_MS or not symbol:
        return None
    return interval, symbol


@dataclass(slots=True)
class OpenKline:
    """A kline topic's candle being built, and its last trade's time."""

    kline: Kline | None = None
    last_ms: int = 0


def on_trade(ok: OpenKline, interval: str, price: int, lots: int, trade_id: int, ms: int,
             buy: bool) -> Kline | None:  # fmt: skip
    """Add one trade; returns the candle it closed (its interval is over), if any."""
    closed = None
    k = ok.kline
    if k is not None and not k.contains(ms):
        closed, k = k, None
    if k is None:
        k = Kline.first(INTERVALS_MS[interval], price, lots, trade_id, ms, buy)
    else:
        k.add(price, lots, trade_id, buy)
    ok.kline, ok.last_ms = k, ms
    return closed


def message(topic: str, interval: str, spec: SymbolSpec, k: Kline, last_ms: int, ts: int,
            confirm: bool) -> bytes:  # fmt: skip
    """One kline push, compact, in the documented field order."""
    px, qty = spec.price_str, spec.qty_str
    turnover = fmt_units(k.quote * spec.tick * spec.step, spec.price_decimals + spec.qty_decimals)
    end = k.start_ms + k.interval_ms - 1
    return (
        f'{{"topic":"{topic}","data":[{{"start":{k.start_ms},"end":{end},'
        f'"interval":"{interval}","open":"{px(k.open)}","close":"{px(k.close)}",'
        f'"high":"{px(k.high)}","low":"{px(k.low)}","volume":"{qty(k.volume)}",'
        f'"turnover":"{turnover}","confirm":{"true" if confirm else "false"},'
        f'"timestamp":{last_ms}}}],"ts":{ts},"type":"snapshot"}}'
    ).encode()
