"""The stream cursor: one reader's private position in one ring, with exact loss counting."""

from __future__ import annotations

import numpy as np

from mdpipe.shm import seqlock
from mdpipe.shm.mapped import MappedRing

GOT, EMPTY, LAPPED = 1, 0, 2


class StreamCursor:
    """Reads a ring's messages in order. A reader the writer lapped skips to the oldest
    message still safe to read and adds what it skipped to `lost`, which is therefore exact."""

    def __init__(self, ring: MappedRing, symbol_base: int = 0) -> None:
        self.ring = ring
        self.symbol_base = symbol_base  # added to symbol_id in records of a multi-ring reader
        self.lost = 0
        self._bind(ring.cursor_now())

    def _bind(self, next_: int) -> None:
        r = self.ring
        self.buf = np.zeros(1, r.dtype)
        self.record = self.buf[0]
        self._sid = memoryview(self.buf).cast("B").cast("I")
        self.c = seqlock.Cursor(r.mm, self.buf, r.slots_off, r.stride, r.capacity, r.rsize, next_)

    def release(self) -> None:
        self.c.release()
        self._sid.release()

    @property
    def next(self) -> int:
        """The number of the next message this cursor reads."""
        return self.c.next

    @next.setter
    def next(self, value: int) -> None:
        self.c.next = value

    def skip_lapped(self) -> None:
        """Jump to the oldest message still safe to read and count what was skipped."""
        n = self.c.next
        target = max(n + 1, self.ring.oldest())
        self.lost += target - n
        self.c.next = target

    def poll(self) -> np.void | None:
        """The next record (a view of the cursor's buffer), or None when there is none yet."""
        c = self.c
        while True:
            r = c.poll()
            if r == GOT:
                if self.symbol_base:
                    self._sid[2] += self.symbol_base  # symbol_id, bytes 8..12
                return self.record
            if r == EMPTY:
                return None
            self.skip_lapped()

    def backlog(self) -> int:
        return max(0, self.ring.cursor_now() - self.c.next)

    def read_batch(self, max_n: int) -> np.ndarray:
        """Up to max_n complete messages as an array the caller owns (oldest first)."""
        out = np.empty(max(0, min(max_n, self.backlog() + 1, self.ring.capacity)), self.ring.dtype)
        got = 0
        while got < len(out):
            k, lapped = self.c.read_many(out[got:], len(out) - got)
            got += k
            if not lapped:
                break
            self.skip_lapped()
            if got:
                break  # a batch never spans a loss: the next one starts after it
        out = out[:got]
        if self.symbol_base and got:
            out["symbol_id"] += self.symbol_base
        return out

    def seek(self, position: int) -> None:
        """Go on at message `position`; messages already overwritten count in `lost`."""
        w = self.ring.cursor_now()
        oldest = self.ring.oldest()
        self.lost += max(0, min(oldest, w) - position)
        self.c.next = min(max(position, oldest), w)

    def seek_recent(self, n: int) -> None:
        """Rewind so the next reads return (up to) the last n messages."""
        w = self.ring.cursor_now()
        self.c.next = max(0, w - min(n, self.ring.capacity - 1))
