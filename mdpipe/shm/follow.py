"""Writer following: notice a writer's restart (in place or by a new segment) and carry on."""

from __future__ import annotations

import time

from mdpipe.shm.mapped import MappedRing

# A writer whose heartbeat is older than this is looked up in /proc (at most this often).
DEEP_CHECK_NS = 500_000_000


class WriterFollower:
    """Tracks one ring's writer: generation bumps, liveness, and replacement of the segment.

    Cheap enough for a spinning reader: one load per check, and the costly look at /proc only
    when the writer's heartbeat is stale, at most twice a second.
    """

    def __init__(self, ring: MappedRing) -> None:
        self.ring = ring
        self.generation = ring.generation
        self.restarts = 0
        self.alive = True
        self._checked_ns = 0

    def check(self) -> str | None:
        """ "restarted" (same segment, new generation), "replaced" (a new segment: remap and
        re-read), or None when nothing changed."""
        ring = self.ring
        gen = ring.h.generation
        if gen != self.generation:
            self.generation = gen
            self.restarts += 1
            ring.refresh_symbols()
            return "restarted"
        now = time.monotonic_ns()
        if now - self._checked_ns <= DEEP_CHECK_NS:
            return None
        self._checked_ns = now
        if time.time_ns() - ring.h.heartbeat_ns <= DEEP_CHECK_NS:
            self.alive = True
            return None
        self.alive = ring.h.writer_alive
        if not self.alive and ring.replaced():
            return "replaced"
        return None

    def replaced_by_new_segment(self) -> None:
        """Account for a remap onto the writer's new segment."""
        self.generation = self.ring.generation
        self.restarts += 1
        self.alive = self.ring.h.writer_alive
