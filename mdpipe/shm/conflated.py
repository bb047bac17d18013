"""The conflated view: each symbol's newest record from the latest table, without the ring."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mdpipe.shm import layout as L
from mdpipe.shm import seqlock
from mdpipe.shm.mapped import MappedRing

TORN = -1

# (slot offset, asks offset) -> (bid, bid qty, ask, ask qty), None, or False when torn.
TopRead = Callable[[int, int], tuple[float, float, float, float] | None | bool]


class LatestView:
    """Seqlocked reads of one ring's latest table: whole records, partial records, tops."""

    def __init__(self, ring: MappedRing) -> None:
        self.ring = ring
        self._latest = seqlock.Latest(ring.mm)
        self.buf = np.zeros(1, ring.dtype)
        self.record = self.buf[0]
        self._sid = memoryview(self.buf).cast("B").cast("I")
        self._whole = ((0, ring.rsize),)
        self._partial: dict[int, tuple[np.ndarray, tuple[tuple[int, int], ...]]] = {}
        self.asks_rel = L.BOOK_LEVELS_OFFSET + 16 * ring.depth if ring.kind == L.KIND_BOOK else 0

    def release(self) -> None:
        self._latest.release()
        self._sid.release()

    def slot_offset(self, symbol_id: int) -> int:
        return self.ring.latest_off + symbol_id * self.ring.stride

    def read(self, symbol_id: int, symbol_base: int = 0) -> np.void | None | int:
        """The symbol's newest record (a view of this view's buffer), None, or TORN."""
        seq = self._latest.read(self.slot_offset(symbol_id), self.buf, self._whole)
        if seq <= 0:
            return None if seq == 0 else TORN
        if symbol_base:
            self._sid[2] += symbol_base
        return self.record

    def read_partial(self, symbol_id: int, levels: int) -> np.void | None | int:
        """The record's fixed fields and its best `levels` levels per side only (a record of a
        book_dtype(levels)): a strategy pays for the bytes it reads, still consistent."""
        entry = self._partial.get(levels)
        if entry is None:
            if self.ring.kind != L.KIND_BOOK:
                raise TypeError(f"levels= needs a book ring; {self.ring.ring!r} holds trades")
            if not 1 <= levels <= self.ring.depth:
                raise ValueError(f"levels must be 1..{self.ring.depth}, got {levels}")
            head = L.BOOK_LEVELS_OFFSET
            ranges = ((0, head), (head, 16 * levels), (self.asks_rel, 16 * levels))
            entry = self._partial[levels] = (np.zeros(1, L.book_dtype(levels)), ranges)
        buf, ranges = entry
        seq = self._latest.read(self.slot_offset(symbol_id), buf, ranges)
        if seq <= 0:
            return None if seq == 0 else TORN
        rec = buf[0]
        rec["bid_count"] = min(int(rec["bid_count"]), levels)
        rec["ask_count"] = min(int(rec["ask_count"]), levels)
        return rec

    def top_reader(self) -> TopRead:
        """The seqlocked top read itself, for a caller that keeps the slot offset."""
        return self._latest.top

    def top(self, symbol_id: int) -> tuple[float, float, float, float] | None | bool:
        """(bid, bid qty, ask, ask qty) of a synced book, None, or False when it stayed torn."""
        return self._latest.top(self.slot_offset(symbol_id), self.asks_rel)
