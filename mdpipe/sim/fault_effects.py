"""Fault effects every venue's simulator applies alike; each venue adds its own exchange rules."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, MutableMapping
from typing import Any, Protocol

from mdpipe.sim.faults import (
    MALFORMED_VARIANTS,
    REST_KINDS,
    Fault,
    FaultError,
    FaultSchedule,
    RestFaultWindows,
)
from mdpipe.sim.hub import Client

log = logging.getLogger("mdpipe.sim")

GOING_AWAY = 1001

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class BackgroundTasks:
    """Runs coroutines in the background (closing handshakes), holding each until it is done."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start `coro` on the running loop without waiting for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def inject_fault(
    fault: Fault,
    *,
    venue: str,
    symbols: set[str],
    handlers: object,
    prefix: str,
    rest_faults: RestFaultWindows | None,
    counts: MutableMapping[str, int],
) -> dict[str, Any]:
    """Apply `fault` now: a REST kind opens a window in `rest_faults` (None: the venue serves no
    REST), any other kind runs the `handlers` method `<prefix><kind>`; counts it and returns
    what it did (the POST /_sim/fault answer). FaultError if the venue cannot apply it."""
    if fault.symbol is not None and fault.symbol not in symbols:
        raise FaultError(f"unknown symbol {fault.symbol}")
    if fault.kind in REST_KINDS and rest_faults is not None:
        rest_faults.add(fault, asyncio.get_running_loop().time())
        done: dict[str, Any] = {}
    else:
        apply = getattr(handlers, f"{prefix}{fault.kind}", None)
        if apply is None:
            why = " (it serves no REST)" if fault.kind in REST_KINDS else ""
            raise FaultError(f"{fault.kind} is not a fault of the {venue} simulator{why}")
        done = apply(fault)
    counts[fault.kind] = counts.get(fault.kind, 0) + 1
    log.info("fault injected: %s %s", fault.to_dict(), done)
    return {"ok": True, "fault": fault.to_dict(), **done}


def fire_due(schedule: FaultSchedule, market_time: float, inject: Callable[[Fault], Any]) -> None:
    """Inject the command-line faults due at `market_time`; one that cannot apply is logged."""
    for fault in schedule.pop_due(market_time):
        try:
            inject(fault)
        except FaultError as exc:
            log.warning("scheduled fault %s not applied: %s", fault.to_dict(), exc)


def disconnect(clients: list[Client], variant: str | None, spawn: Spawn) -> None:
    """Drop every client: a close frame (`variant` "close") or a bare TCP close (the default)."""
    for client in clients:
        client.close_reason = "fault_disconnect"
        if variant == "close":
            spawn(client.conn.close(GOING_AWAY, "simulated disconnect"))
        else:
            client.conn.transport.abort()  # TCP close, no close frame


class MalformedCycle:
    """Which malformed variants a fault sends: its own `variant`, or the next ones of a cycle
    through all variants that continues where the previous fault stopped."""

    def __init__(self) -> None:
        self._next = 0

    def variants(self, fault: Fault) -> list[str]:
        """`fault.count` variants (by default one of its own, or the whole cycle once)."""
        count = fault.count or (1 if fault.variant else len(MALFORMED_VARIANTS))
        if fault.variant:
            return [fault.variant] * count
        start = self._next
        self._next = (start + count) % len(MALFORMED_VARIANTS)
        return [MALFORMED_VARIANTS[(start + i) % len(MALFORMED_VARIANTS)] for i in range(count)]


class GappableFeed(Protocol):
    """What the gap and silence faults act on: a venue's feed of book updates."""

    symbols: set[str]

    def gap(self, symbol: str, count: int) -> None: ...

    def silence(self, seconds: float, symbol: str | None) -> None: ...


def gap_feed(feed: GappableFeed, fault: Fault, rng: random.Random) -> dict[str, Any]:
    """Drop the next `count` (1) book updates of the fault's symbol, or of one `rng` draws."""
    symbol = fault.symbol or rng.choice(sorted(feed.symbols))
    count = fault.count or 1
    feed.gap(symbol, count)
    return {"symbol": symbol, "count": count}


def silence_feed(feed: GappableFeed, fault: Fault) -> dict[str, Any]:
    """Publish nothing for `seconds` (5 by default), of the fault's symbol or of the whole feed."""
    seconds = 5.0 if fault.seconds is None else fault.seconds
    feed.silence(seconds, fault.symbol)
    return {"seconds": seconds, "symbol": fault.symbol}
