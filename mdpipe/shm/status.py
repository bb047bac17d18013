"""Status segments: a component's counters and named entries, with no ring behind them.

The publisher and the supervisor keep their counters here for `mdpipe stats` and /metrics.
The names table (the symbol table's place) lists the component's entries, e.g. the
supervisor's children; `attach()` refuses these segments because they hold no records.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence

import numpy as np

from mdpipe.shm import layout as L
from mdpipe.shm.segment import LayoutError, SegmentStatus, read_status
from mdpipe.shm.writer import SegmentFile, _Tables


class StatusWriter(_Tables):
    """The writer of one status segment: named counters and gauges, and a names table."""

    def __init__(self) -> None:  # use StatusWriter.create
        raise TypeError("use StatusWriter.create(...)")

    @classmethod
    def create(
        cls,
        instance: str,
        name: str,
        *,
        entries: Sequence[str] = (),
        max_entries: int | None = None,
        counters: Sequence[str] = (),
        mode: int = 0o600,
        group: str = "",
    ) -> StatusWriter:
        """Create (or reclaim from a dead writer) /dev/shm/mdpipe.<instance>.<name>."""
        max_entries = max(1, len(entries)) if max_entries is None else max_entries
        if not 1 <= max_entries <= L.MAX_SYMBOLS:
            raise ValueError(f"max_entries must be 1..{L.MAX_SYMBOLS}, got {max_entries}")
        seg = SegmentFile(instance, name, L.KIND_STATUS, 0, 0, max_entries, "", mode, group)
        self = object.__new__(cls)
        self._init_tables(seg)
        self._heartbeat = np.frombuffer(seg.mm, np.uint64, 1, L.H_HEARTBEAT_NS)
        self.instance, self.name = instance, name
        self.generation = seg.generation
        self._closed = False
        for entry in entries:
            self.add_entry(entry)
        for counter in counters:
            self.counter_index(counter)
        return self

    def heartbeat(self) -> None:
        """Tell stats and readers the component is alive."""
        self._heartbeat[0] = time.time_ns()  # one aligned 8-byte store, never torn

    def add_entry(self, entry: str) -> int:
        """Register a named entry (e.g. a child process); returns its index."""
        return self.add_symbol(entry)

    @property
    def entries(self) -> dict[str, int]:
        """Entry name to index."""
        return self.symbols

    def close(self, *, unlink: bool = False) -> None:
        """Mark the segment writer-less, and remove it when unlink is True."""
        if self._closed:
            return
        self._closed = True
        self._mark_closed()
        self.__dict__.pop("counters", None)
        self.__dict__.pop("_heartbeat", None)
        # A caller may still hold a view of the counters; then the mapping goes with it.
        with contextlib.suppress(BufferError):
            self._mm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._seg.path)

    def __enter__(self) -> StatusWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_status_segment(instance: str, name: str) -> SegmentStatus:
    """Read a status segment's counters and entries (`symbols` holds the entries)."""
    st = read_status(instance, name)
    if st.kind != "status":
        raise LayoutError(
            f"segment {name!r} of instance {instance!r} is a {st.kind} ring, not a status segment"
        )
    return st
