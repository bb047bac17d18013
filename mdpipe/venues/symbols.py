"""Splitting a venue's concatenated symbol (BTCUSDT) into base and quote assets."""

from __future__ import annotations

from mdpipe.instrument import Instrument

# Quote assets, longest first so FDUSD wins over USD and USDT over USD.
QUOTES = (
    "FDUSD",
    "USDT",
    "USDC",
    "BUSD",
    "TUSD",
    "USDE",
    "USD1",
    "BTC",
    "ETH",
    "BNB",
    "EUR",
    "TRY",
    "BRL",
    "JPY",
    "DAI",
    "USD",
)


def split_concatenated(symbol: str, kind: str) -> Instrument:
    """Instrument of a symbol spelled base+quote (Binance, Bybit); ValueError if no quote fits."""
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return Instrument(symbol[: -len(quote)], quote, kind).validate()
    raise ValueError(f"{symbol}: no known quote asset at its end ({', '.join(QUOTES)})")
