"""CPU pinning of the ingest process."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def pin_to_core(core: int) -> bool:
    """Pin this process to one core and verify it took; call after all imports.

    Native libraries (BLAS under numpy) may reset the affinity while they load, which is
    why this runs last and is checked with sched_getaffinity.
    """
    try:
        os.sched_setaffinity(0, {core})
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
