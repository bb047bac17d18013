"""Results of blocking work done off the hot thread, with an eventfd the selector can watch."""

from __future__ import annotations

import contextlib
import os
import queue
from typing import Any


class Inbox:
    """A queue that wakes the ingest loop: helper threads `post`, the loop `drain`s."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def fileno(self) -> int:
        return self._fd

    def post(self, item: Any) -> None:
        """Hand an item to the loop (any thread)."""
        self._q.put(item)
        os.eventfd_write(self._fd, 1)

    def drain(self) -> list[Any]:
        """Every item posted so far (loop thread only)."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._fd)
        items = []
        while True:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        os.close(self._fd)
