"""A ring tailer with a saved cursor and exact loss counting: the pattern every ring consumer shares.

The publisher uses it today and the archiver will: a consumer reads a ring in batches, saves
its position in a counter of its own status segment after each batch it has handed on, goes
back to that position when a hand-on failed (`rewind`), and resumes there after its own crash
(`resume`); records the writer overwrote before they were read are counted exactly
(`take_lost`), never guessed.
"""

from __future__ import annotations

import logging

import numpy as np

from mdpipe.readers import Reader

log = logging.getLogger("mdpipe.tailer")


class RingTailer:
    """One attached ring read in batches, with its cursor in `counters[cursor_ix]`."""

    __slots__ = ("name", "reader", "counters", "cursor_ix", "lost_seen", "generation", "mark")

    def __init__(
        self, name: str, reader: Reader, counters: np.ndarray, cursor_ix: int | None
    ) -> None:
        self.name, self.reader = name, reader
        self.counters, self.cursor_ix = counters, cursor_ix
        self.lost_seen = reader.lost
        self.generation = reader.generation
        self.mark = reader.position  # where the batch not yet handed on begins

    def resume(self, saved: int | None) -> None:
        """Go on at `saved`, where a predecessor stopped reading this ring, if it can be."""
        reader = self.reader
        # No predecessor, or it read another segment of that name: start where we are.
        if saved is not None and saved <= reader.position:
            behind = reader.position - saved
            reader.seek(saved)
            lost = reader.lost - self.lost_seen
            log.info(
                "ring %s: resuming where the previous reader stopped (%d records behind%s)",
                self.name,
                behind,
                f", {lost} of them already overwritten" if lost else "",
            )
        self.mark = reader.position
        self.save()

    def read(self, max_n: int) -> np.ndarray:
        """The next records (at most max_n); the batch begins at `mark` until `commit()`."""
        recs = self.reader.read_batch(max_n)
        # Records skipped because they were overwritten are counted once, not re-read.
        self.mark = self.reader.position - len(recs)
        return recs

    def take_lost(self) -> int:
        """Records overwritten before they were read since the last call (exact)."""
        lost = self.reader.lost
        n = lost - self.lost_seen
        self.lost_seen = lost
        return n

    def rewind(self) -> None:
        """Read the last batch again: it was not handed on (what was overwritten counts as lost)."""
        self.reader.seek(self.mark)

    def save(self) -> None:
        """Save the position: everything before it is handed on."""
        if self.cursor_ix is not None:
            self.counters[self.cursor_ix] = self.reader.position

    @property
    def backlog(self) -> int:
        return self.reader.backlog()

    def close(self) -> None:
        self.reader.close()
