"""One way to replay a tape at its recorded pace: the loop every venue's tape source runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from mdpipe.sim.hub import Hub

MAX_BATCH = 2000  # lines published per pass at most, so the loop stays responsive
MAX_SPEED_BATCH = 200  # lines per pass with --max, between waits for the slowest reader


class Stamped(Protocol):
    ns: int  # the line's receive time on the tape


async def replay_paced(
    lines: Sequence[Stamped],
    publish: Callable[[int, int, float], int],
    hub: Hub,
    *,
    speed: float,
    max_speed: bool,
    tick: float,
    silent_until: Callable[[], float],
) -> None:
    """Publish `lines` once, at `speed` times their recorded pace or (`max_speed`) as fast as
    the slowest client reads.

    `publish(i, j, now)` sends lines[i:j] and returns the index it reached (less than j if
    a fault silenced the feed meanwhile). While `silent_until()` lies ahead the replay
    holds, and its clock with it: the tape resumes where it stopped, without a burst.
    """
    loop = asyncio.get_running_loop()
    n = len(lines)
    if not n:
        return
    base = lines[0].ns
    scale = 1e-9 / speed
    t0 = loop.time()
    i = 0
    while i < n:
        now = loop.time()
        quiet = silent_until()
        if now < quiet:
            await asyncio.sleep(min(quiet - now, 0.05))
            t0 += loop.time() - now
            continue
        if max_speed:
            j = min(n, i + MAX_SPEED_BATCH)
        else:
            due_ns = base + (now - t0) / scale
            j = i
            limit = min(n, i + MAX_BATCH)
            while j < limit and lines[j].ns <= due_ns:
                j += 1
        i = publish(i, j, now)
        hub.flush()
        if max_speed:
            await hub.drain()
            await asyncio.sleep(0)
        elif i < n:
            wait = (lines[i].ns - base) * scale - (loop.time() - t0)
            await asyncio.sleep(min(max(wait, 0.0), tick * 50))
