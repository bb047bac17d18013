"""The venue-neutral name of what a venue symbol trades, so readers can line venues up."""

from __future__ import annotations

from typing import NamedTuple

KINDS = ("perp", "spot", "future", "option")


class Instrument(NamedTuple):
    """A normalized instrument: BTCUSDT on Binance USD-M and BTC-USDT-SWAP on OKX are both
    Instrument("BTC", "USDT", "perp")."""

    base: str
    quote: str
    kind: str

    def __str__(self) -> str:
        return f"{self.base}/{self.quote}:{self.kind}"

    def validate(self) -> Instrument:
        """Return self, or raise ValueError naming what is wrong."""
        if self.kind not in KINDS:
            raise ValueError(f"instrument kind must be one of {KINDS}, got {self.kind!r}")
        for part, value in (("base", self.base), ("quote", self.quote)):
            if not value or not value.isascii() or not value.isalnum() or len(value) > 11:
                raise ValueError(f"instrument {part} {value!r}: 1..11 ascii letters or digits")
        return self
