"""Binance JSON payloads, field for field and in the documented order, per market."""

from __future__ import annotations

import orjson

from mdpipe.sim.instruments import FUTURES, SymbolSpec, fmt_units
from mdpipe.sim.market import AggFill, Fill
from mdpipe.sim.orderbook import Book
from mdpipe.sim.rolling import DayStats, Kline

Levels = list[list[str]]


def envelope(stream: str, payload: bytes) -> bytes:
    """The combined-stream wrapper, byte-identical to orjson.dumps({"stream":..,"data":..})."""
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"


class Encoder:
    """Encodes events of one market; spot and futures differ in fields, not in meaning."""

    def __init__(self, market: str, specs: dict[str, SymbolSpec]) -> None:
        self.futures = market == FUTURES
        self.specs = specs

    def levels(self, symbol: str, changes: dict[int, int]) -> Levels:
        """[[price, qty], ...] ascending by price, as the exchange lists diff levels."""
        spec = self.specs[symbol]
        return [[spec.price_str(p), spec.qty_str(changes[p])] for p in sorted(changes)]

    def top_levels(self, symbol: str, book: Book, limit: int) -> tuple[Levels, Levels]:
        """The best `limit` bids (descending) and asks (ascending) as decimal strings."""
        spec = self.specs[symbol]
        bids = [[spec.price_str(p), spec.qty_str(q)] for p, q in book.bids.top(limit)]
        asks = [[spec.price_str(p), spec.qty_str(q)] for p, q in book.asks.top(limit)]
        return bids, asks

    def depth_diff(
        self,
        symbol: str,
        first: int,
        last: int,
        prev: int,
        bids: Levels,
        asks: Levels,
        event_ms: int,
        trans_ms: int,
    ) -> bytes:
        """A `depthUpdate` diff (futures adds T and pu)."""
        if self.futures:
            return orjson.dumps(
                {
                    "e": "depthUpdate",
                    "E": event_ms,
                    "T": trans_ms,
                    "s": symbol,
                    "U": first,
                    "u": last,
                    "pu": prev,
                    "b": bids,
                    "a": asks,
                }
            )
        return orjson.dumps(
            {
                "e": "depthUpdate",
                "E": event_ms,
                "s": symbol,
                "U": first,
                "u": last,
                "b": bids,
                "a": asks,
            }
        )

    def partial_depth(
        self,
        symbol: str,
        first: int,
        last: int,
        prev: int,
        bids: Levels,
        asks: Levels,
        event_ms: int,
        trans_ms: int,
    ) -> bytes:
        """A `<symbol>@depth<N>` partial book: a depthUpdate on futures, a bare snapshot on spot."""
        if self.futures:
            return self.depth_diff(symbol, first, last, prev, bids, asks, event_ms, trans_ms)
        return orjson.dumps({"lastUpdateId": last, "bids": bids, "asks": asks})

    def book_ticker(
        self,
        symbol: str,
        update_id: int,
        top: tuple[int, int, int, int],
        event_ms: int,
        trans_ms: int,
    ) -> bytes:
        """A `bookTicker`; spot carries no event type or times."""
        spec = self.specs[symbol]
        bid, bid_lots, ask, ask_lots = top
        if self.futures:
            return orjson.dumps(
                {
                    "e": "bookTicker",
                    "u": update_id,
                    "E": event_ms,
                    "T": trans_ms,
                    "s": symbol,
                    "b": spec.price_str(bid),
                    "B": spec.qty_str(bid_lots),
                    "a": spec.price_str(ask),
                    "A": spec.qty_str(ask_lots),
                }
            )
        return orjson.dumps(
            {
                "u": update_id,
                "s": symbol,
                "b": spec.price_str(bid),
                "B": spec.qty_str(bid_lots),
                "a": spec.price_str(ask),
                "A": spec.qty_str(ask_lots),
            }
        )

    def trade(self, symbol: str, fill: Fill, event_ms: int, trans_ms: int) -> bytes:
        """A `trade`; `m` is true when the buyer was the maker (the aggressor sold)."""
        spec = self.specs[symbol]
        if self.futures:
            return orjson.dumps(
                {
                    "e": "trade",
                    "E": event_ms,
                    "T": trans_ms,
                    "s": symbol,
                    "t": fill.trade_id,
                    "p": spec.price_str(fill.price),
                    "q": spec.qty_str(fill.lots),
                    "X": "MARKET",
                    "m": fill.buyer_maker,
                }
            )
        return orjson.dumps(
            {
                "e": "trade",
                "E": event_ms,
                "s": symbol,
                "t": fill.trade_id,
                "p": spec.price_str(fill.price),
                "q": spec.qty_str(fill.lots),
                "T": trans_ms,
                "m": fill.buyer_maker,
                "M": True,
            }
        )

    def agg_trade(self, symbol: str, agg: AggFill, event_ms: int, trans_ms: int) -> bytes:
        """An `aggTrade`: one taker order's fills at one price."""
        spec = self.specs[symbol]
        body = {
            "e": "aggTrade",
            "E": event_ms,
            "s": symbol,
            "a": agg.agg_id,
            "p": spec.price_str(agg.price),
            "q": spec.qty_str(agg.lots),
            "f": agg.first_id,
            "l": agg.last_id,
            "T": trans_ms,
            "m": agg.buyer_maker,
        }
        if not self.futures:
            body["M"] = True
        return orjson.dumps(body)

    def mark_price(self, symbol: str, mid_ticks2: int, event_ms: int, funding_ms: int) -> bytes:
        """A futures `markPriceUpdate` around the mid (`mid_ticks2` is bid + ask, in ticks)."""
        spec = self.specs[symbol]
        units = mid_ticks2 * spec.tick  # twice the mid, in price units
        scale = 10 ** (8 - spec.price_decimals)
        whole, frac = divmod(units * scale // 2, 10**8)
        price = f"{whole}.{frac:08d}"
        return orjson.dumps(
            {
                "e": "markPriceUpdate",
                "E": event_ms,
                "s": symbol,
                "p": price,
                "i": price,
                "P": price,
                "r": "0.00010000",
                "T": funding_ms,
            }
        )

    def day_ticker(
        self, symbol: str, st: DayStats, top: tuple[int, int, int, int], event_ms: int
    ) -> bytes:
        """A `24hrTicker` over the statistics so far (spot adds the previous close and top)."""
        spec = self.specs[symbol]
        px, qty = spec.price_str, spec.qty_str
        quote_dec = spec.price_decimals + spec.qty_decimals
        quote_units = st.quote * spec.tick * spec.step
        change = st.last - st.open
        pct = f"{change * 100 / st.open:.3f}" if st.open else "0.000"
        avg = px(round(st.quote / st.volume)) if st.volume else px(st.last)
        body: dict = {
            "e": "24hrTicker",
            "E": event_ms,
            "s": symbol,
            "p": ("-" if change < 0 else "") + px(abs(change)),
            "P": pct,
            "w": avg,
        }
        if not self.futures:
            body["x"] = px(st.open)
        body["c"] = px(st.last)
        body["Q"] = qty(st.last_lots)
        if not self.futures:
            bid, bid_lots, ask, ask_lots = top
            body.update({"b": px(bid), "B": qty(bid_lots), "a": px(ask), "A": qty(ask_lots)})
        body.update(
            {
                "o": px(st.open),
                "h": px(st.high),
                "l": px(st.low),
                "v": qty(st.volume),
                "q": fmt_units(quote_units, quote_dec),
                "O": st.open_ms,
                "C": event_ms,
                "F": st.first_id,
                "L": st.last_id,
                "n": st.count,
            }
        )
        return orjson.dumps(body)

    def kline(self, symbol: str, name: str, k: Kline, event_ms: int, closed: bool) -> bytes:
        """A `kline` event for interval `name` ("1m"); `x` is true once the interval closed."""
        spec = self.specs[symbol]
        px, qty = spec.price_str, spec.qty_str
        quote_dec = spec.price_decimals + spec.qty_decimals
        scale = spec.tick * spec.step
        return orjson.dumps(
            {
                "e": "kline",
                "E": event_ms,
                "s": symbol,
                "k": {
                    "t": k.start_ms,
                    "T": k.start_ms + k.interval_ms - 1,
                    "s": symbol,
                    "i": name,
                    "f": k.first_id,
                    "L": k.last_id,
                    "o": px(k.open),
                    "c": px(k.close),
                    "h": px(k.high),
                    "l": px(k.low),
                    "v": qty(k.volume),
                    "n": k.count,
                    "x": closed,
                    "q": fmt_units(k.quote * scale, quote_dec),
                    "V": qty(k.taker_volume),
                    "Q": fmt_units(k.taker_quote * scale, quote_dec),
                    "B": "0",
                },
            }
        )

    def snapshot(
        self, last_id: int, bids: Levels, asks: Levels, event_ms: int, trans_ms: int
    ) -> bytes:
        """The REST depth answer (futures adds E and T)."""
        if self.futures:
            return orjson.dumps(
                {"lastUpdateId": last_id, "E": event_ms, "T": trans_ms, "bids": bids, "asks": asks}
            )
        return orjson.dumps({"lastUpdateId": last_id, "bids": bids, "asks": asks})
