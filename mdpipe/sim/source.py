"""What the server needs from a market-data source (synthetic market or tape replay)."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import Any

from mdpipe.sim.faults import FaultSchedule
from mdpipe.sim.hub import Hub


class SnapshotUnavailable(Exception):
    """No REST snapshot can be produced right now; the message is the reason."""


class Feed:
    """Publishes into the hub once `started` is set; its market time fires the scheduled faults."""

    def __init__(self, hub: Hub, schedule: FaultSchedule, on_due: Callable[[float], None]) -> None:
        self.hub = hub
        self.schedule = schedule
        self.on_due = on_due  # fires command-line faults when market time reaches them
        self.started = asyncio.Event()


class Source(Feed, abc.ABC):
    """Produces stream messages into the hub and answers REST snapshots consistently with them."""

    market: str
    symbols: set[str]

    @abc.abstractmethod
    def deliverable(self, stream: str) -> bool:
        """Whether this source ever publishes `stream` (routes aside)."""

    def on_subscribe(self, stream: str) -> None:  # noqa: B027 - most sources need no hook
        """Called when a client starts receiving `stream`; derived streams start lazily."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Produce messages until cancelled; waits for `started` first."""

    @abc.abstractmethod
    async def snapshot(self, symbol: str, limit: int) -> bytes:
        """The REST depth answer for `symbol` now; raises SnapshotUnavailable if there is none."""

    @abc.abstractmethod
    def last_update_id(self, symbol: str) -> int:
        """The last book update id published for `symbol` (0 if none yet)."""

    @abc.abstractmethod
    def gap(self, symbol: str, count: int) -> None:
        """Skip the next `count` diffs of `symbol` on every diff stream."""

    @abc.abstractmethod
    def silence(self, seconds: float, symbol: str | None) -> None:
        """Publish nothing (for `symbol`, or at all) for `seconds`, then resume seamlessly."""

    @abc.abstractmethod
    def market_time(self) -> float:
        """Seconds of simulated exchange time since the start (drives the fault schedule)."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Source counters for /_sim/stats."""
