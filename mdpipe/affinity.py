"""CPU pinning of mdpipe processes (ingest, publisher): every thread, verified."""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger(__name__)


def _threads() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except FileNotFoundError:
        return [0]


def pin_to_core(core: int) -> bool:
    """Pin every thread of this process to one core and verify it took; call after all imports.

    Native libraries (BLAS under numpy) may reset the affinity while they load and start
    their own threads, which keep the old affinity: hence last, every thread, and checked.
    """
    try:
        for tid in _threads():
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.sched_setaffinity(tid, {core})
    except OSError as exc:
        log.error("cannot pin to core %d: %s; running unpinned", core, exc)
        return False
    got = os.sched_getaffinity(0)
    if got != {core}:
        log.error("pinned to core %d but the affinity is %s; running unpinned", core, sorted(got))
        return False
    return True


def pinned_core() -> int | None:
    """The single core this process may run on, or None when it may run on several."""
    cores = os.sched_getaffinity(0)
    return next(iter(cores)) if len(cores) == 1 else None
