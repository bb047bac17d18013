"""Symbol specifications (tick, lot, decimals) and exact decimal-string formatting."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

FUTURES = "futures"
SPOT = "spot"
MARKETS = (FUTURES, SPOT)


@dataclass(frozen=True)
class SymbolSpec:
    """One instrument: prices and quantities are integers in units of 10**-decimals."""

    symbol: str
    price_decimals: int
    qty_decimals: int
    tick: int  # price step, in price units
    step: int  # quantity step (lot), in quantity units
    price: int  # initial mid price, in price units
    lot_median: int  # typical resting quantity at one level, in lots

    def price_str(self, ticks: int) -> str:
        """Decimal string of a price given in ticks."""
        return fmt_units(ticks * self.tick, self.price_decimals)

    def qty_str(self, lots: int) -> str:
        """Decimal string of a quantity given in lots."""
        return fmt_units(lots * self.step, self.qty_decimals)


def fmt_units(value: int, decimals: int) -> str:
    """Format an integer count of 10**-decimals units as a fixed-point decimal string."""
    if decimals == 0:
        return str(value)
    whole, frac = divmod(value, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}"


# (price, tick, step, typical resting size at one level), in human units; the ticks and
# steps are Binance's real USD-M filters.
_KNOWN: dict[str, tuple[str, str, str, str]] = {
    "BTCUSDT": ("61800.00", "0.10", "0.001", "0.3"),
    "ETHUSDT": ("2650.00", "0.01", "0.001", "2"),
    "BNBUSDT": ("520.00", "0.01", "0.01", "3"),
    "SOLUSDT": ("150.00", "0.01", "1", "50"),
    "XRPUSDT": ("0.5600", "0.0001", "0.1", "2000"),
    "DOGEUSDT": ("0.10000", "0.00001", "1", "50000"),
}
_SPOT_TICKS: dict[str, str] = {"BTCUSDT": "0.01", "ETHUSDT": "0.01", "SOLUSDT": "0.01"}
_SPOT_STEPS: dict[str, str] = {"BTCUSDT": "0.00001", "ETHUSDT": "0.0001", "SOLUSDT": "0.001"}


def _to_units(text: str, decimals: int) -> int:
    whole, _, frac = text.partition(".")
    frac = (frac + "0" * decimals)[:decimals]
    return int(whole) * 10**decimals + int(frac or "0")


def _decimals(text: str) -> int:
    return len(text.partition(".")[2])


def _derived(symbol: str, seed: int) -> tuple[str, str, str, str]:
    """A stable, plausible spec for a symbol we have no table entry for."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{symbol}".encode()).digest()[:8], "little")
    magnitude = h % 6 - 2  # price between 0.01 and 1000
    mantissa = 1.0 + (h >> 8) % 9000 / 1000.0
    price = mantissa * 10.0**magnitude
    tick_exp = max(magnitude - 3, -6)
    tick = f"{10.0**tick_exp:.{max(-tick_exp, 0)}f}"
    step = "1" if price < 1 else "0.01" if price < 100 else "0.001"
    size = max(1000.0 / price, 1.0)  # about 1000 USDT per level
    return f"{price:.{max(-tick_exp, 0)}f}", tick, step, f"{size:.3f}"


def symbol_spec(symbol: str, market: str, seed: int = 0) -> SymbolSpec:
    """The spec of `symbol` on `market`: real filters for well-known symbols, derived otherwise."""
    price, tick, step, size = _KNOWN.get(symbol) or _derived(symbol, seed)
    if market == SPOT:
        tick = _SPOT_TICKS.get(symbol, tick)
        step = _SPOT_STEPS.get(symbol, step)
        # Spot prints every price and quantity with 8 decimals.
        price_dec = qty_dec = 8
    else:
        # Futures prints prices with the tick's precision (at least 2) and quantities with
        # the lot's precision, as fapi does for BTCUSDT ("61800.20", "0.014").
        price_dec = max(_decimals(tick), 2)
        qty_dec = _decimals(step)
    tick_units = _to_units(tick, price_dec)
    price_units = _to_units(price, price_dec) // tick_units * tick_units
    step_units = _to_units(step, qty_dec)
    return SymbolSpec(
        symbol=symbol,
        price_decimals=price_dec,
        qty_decimals=qty_dec,
        tick=tick_units,
        step=step_units,
        price=price_units,
        lot_median=max(_to_units(size, qty_dec) // step_units, 1),
    )


def universe(n: int, quote: str = "USDT") -> list[str]:
    """`n` synthetic perpetual symbols (AAAAUSDT, AAABUSDT, ...): a whole-market stand-in."""
    names = []
    for i in range(n):
        letters = ""
        for _ in range(4):
            i, r = divmod(i, 26)
            letters = chr(65 + r) + letters
        names.append(letters + quote)
    return names


def exchange_info(symbols: list[str], market: str) -> dict[str, object]:
    """The exchangeInfo fields a client lists symbols by (futures: every one a perpetual)."""
    rows = []
    for sym in symbols:
        quote = next((q for q in ("USDT", "USDC", "BTC", "FDUSD") if sym.endswith(q)), "USDT")
        row: dict[str, object] = {
            "symbol": sym,
            "status": "TRADING",
            "baseAsset": sym[: -len(quote)],
            "quoteAsset": quote,
        }
        if market == FUTURES:
            row["contractType"] = "PERPETUAL"
        rows.append(row)
    return {"timezone": "UTC", "symbols": rows}
