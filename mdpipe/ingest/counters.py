"""The ingest process's counters, kept in its books segment for `mdpipe stats` and /metrics."""

from __future__ import annotations

import contextlib

from mdpipe.counters import INGEST
from mdpipe.shm.writer import RingWriter

# Declared with their meanings in mdpipe/counters.py (stats, /metrics and the README use them).
COUNTERS = INGEST.names


class Counters:
    """Named counters with their indices resolved once: `c.arr[c.frames] += 1` on the hot path."""

    def __init__(self, writer: RingWriter) -> None:
        self._writer = writer
        # The segment's counter words as a memoryview: `arr[i] += 1` costs a fifth of the same
        # on the numpy view (no numpy scalar made and dropped per increment), and each word is
        # still one aligned 8-byte store.
        self.arr: memoryview = memoryview(writer.counters).cast("B").cast("Q")
        for name in COUNTERS:
            setattr(self, name, writer.counter_index(name))

    def inc(self, name: str, n: int = 1) -> None:
        """Add to a counter by name, registering it on first use (e.g. one per error kind).

        When the segment's counter table is full the detail is dropped; totals such as
        parse_errors are registered up front and always count.
        """
        with contextlib.suppress(ValueError):
            self.arr[self._writer.counter_index(name)] += n

    def set(self, name: str, value: int) -> None:
        """Set a gauge by name."""
        self.arr[self._writer.counter_index(name)] = value

    def value(self, name: str) -> int:
        return int(self.arr[self._writer.counter_index(name)])
