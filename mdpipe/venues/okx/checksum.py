"""OKX's order-book checksum: signed CRC32 of `bid1px:bid1sz:ask1px:ask1sz:...`.

The top 25 levels per side are interleaved bid, ask, bid, ask; once the shorter side runs
out, its missing levels are skipped (the longer side's levels follow on their own). Every
price and size is the raw string exactly as received: a float rebuilt from it ("64000.10"
vs "64000.1") gives a different checksum.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, zip_longest
from zlib import crc32

CHECKSUM_LEVELS = 25
_SIGN = 1 << 31
_WRAP = 1 << 32


def signed32(value: int) -> int:
    """An unsigned 32-bit CRC as the signed int OKX sends."""
    return value - _WRAP if value >= _SIGN else value


def checksum_string(bids: Sequence[str], asks: Sequence[str]) -> str:
    """The checked text from best-first `px:sz` pieces of each side (top 25 used)."""
    top_bids = bids[:CHECKSUM_LEVELS]
    top_asks = asks[:CHECKSUM_LEVELS]
    if len(top_bids) == len(top_asks):
        return ":".join(chain.from_iterable(zip(top_bids, top_asks, strict=True)))
    pairs = zip_longest(top_bids, top_asks)
    return ":".join(p for p in chain.from_iterable(pairs) if p is not None)


def book_checksum(bids: Sequence[str], asks: Sequence[str]) -> int:
    """The signed CRC32 OKX would send for a book with these best-first `px:sz` levels."""
    return signed32(crc32(checksum_string(bids, asks).encode()))


def level_checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """The checksum of best-first OKX levels `[px, sz, ...]` (for the simulator and tests)."""
    return book_checksum(
        [f"{b[0]}:{b[1]}" for b in bids[:CHECKSUM_LEVELS]],
        [f"{a[0]}:{a[1]}" for a in asks[:CHECKSUM_LEVELS]],
    )
