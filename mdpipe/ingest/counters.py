"""The ingest process's counters, kept in its books segment for `mdpipe stats` and /metrics."""

from __future__ import annotations

import contextlib

import numpy as np

from mdpipe.shm.writer import RingWriter

# Monotonic counters; names starting with g_ are gauges (current values).
COUNTERS = (
    "frames",
    "depth_diffs",
    "trades",
    "book_records",
    "parse_errors",
    "dead_lettered",
    "gaps",
    "resyncs",
    "snapshots",
    "snapshot_errors",
    "reconnects",
    "connect_failures",
    "silences",
    "stream_faults",
    "crossed_books",
    "rest_451",
    "rest_429",
    "rest_418",
    "rest_5xx",
    "rollovers",
    "rollover_timeouts",
    "duplicates",
    "g_connections",
    "g_connections_expected",
    "g_books_synced",
    "g_books_total",
    "g_core",
)


class Counters:
    """Named counters with their indices resolved once: `c.arr[c.frames] += 1` on the hot path."""

    def __init__(self, writer: RingWriter) -> None:
        self._writer = writer
        self.arr: np.ndarray = writer.counters
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
