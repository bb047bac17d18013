"""What every venue's tape replay does alike: pace, loop, gap and silence faults, market time."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Sequence

from mdpipe.sim.faults import FaultSchedule
from mdpipe.sim.hub import Hub
from mdpipe.sim.replay import Stamped, replay_paced
from mdpipe.sim.source import Feed

log = logging.getLogger("mdpipe.sim")


class TapePlayer(Feed, abc.ABC):
    """Replays `lines` at `speed`× their recorded pace, or as fast as clients read (`max_speed`).

    A venue's player says what one line does (`_play_line`) and how its rebuilt books start
    over when the tape loops (`_reset_books`).
    """

    def __init__(
        self,
        lines: Sequence[Stamped],
        hub: Hub,
        speed: float,
        max_speed: bool,
        loop_tape: bool,
        tick: float,
        schedule: FaultSchedule,
        on_due: Callable[[float], None],
    ) -> None:
        super().__init__(hub, schedule, on_due)
        self.lines = lines
        self.speed = speed
        self.max_speed = max_speed
        self.loop_tape = loop_tape
        self.tick = tick
        self.position = 0  # the next line of the current pass
        self.replayed = 0  # lines replayed over all passes
        self.loops = 0
        self.finished = False
        self.skipped_by_gap = 0
        self._gaps: dict[str, int] = {}
        self._silent_until = 0.0
        self._market_time = 0.0

    @abc.abstractmethod
    def _play_line(self, index: int) -> bool:
        """Publish lines[index] (and keep the books); False if a gap fault swallowed it."""

    @abc.abstractmethod
    def _reset_books(self) -> None:
        """Forget the rebuilt books: the tape starts over."""

    async def run(self) -> None:
        """Replay (and loop if asked) after `started`."""
        await self.started.wait()
        while True:
            await replay_paced(
                self.lines,
                self._publish_lines,
                self.hub,
                speed=self.speed,
                max_speed=self.max_speed,
                tick=self.tick,
                silent_until=lambda: self._silent_until,
            )
            if not self.loop_tape:
                break
            # The tape starts over: its ids go back in time, so the rebuilt books reset and
            # clients see a discontinuity they must resync from, as after a server restart.
            self.loops += 1
            self._reset_books()
            self.schedule.rebase(self._market_time)
            self._market_time = 0.0
        self.finished = True
        log.info("tape finished after %d lines", self.replayed)

    def _publish_lines(self, i: int, j: int, now: float) -> int:
        """Publish lines[i:j] (fewer if a fault silenced the feed); returns and keeps the position."""
        lines = self.lines
        base = lines[0].ns
        while i < j and self._silent_until <= now:
            self._market_time = (lines[i].ns - base) * 1e-9
            self.replayed += 1
            played = self._play_line(i)
            i += 1
            if played and self._market_time >= self.schedule.next_due:
                self.on_due(self._market_time)
        self.position = i
        return i

    def _gapped(self, key: str) -> bool:
        """Whether a gap fault on `key` swallows this line (and counts it)."""
        if self._gaps.get(key):
            self._gaps[key] -= 1
            self.skipped_by_gap += 1
            return True
        return False

    def gap(self, symbol: str, count: int) -> None:
        """Leave the next `count` book lines of `symbol` out of the replay."""
        self._gaps[symbol] = self._gaps.get(symbol, 0) + count

    def silence(self, seconds: float, symbol: str | None) -> None:
        """Hold the whole replay for `seconds` (a tape is one recorded sequence: `symbol` is
        ignored)."""
        until = asyncio.get_running_loop().time() + seconds
        self._silent_until = max(self._silent_until, until)

    def silent(self) -> bool:
        """True while a silence fault holds the whole feed."""
        return asyncio.get_running_loop().time() < self._silent_until

    def market_time(self) -> float:
        """Tape seconds since its first line."""
        return self._market_time
