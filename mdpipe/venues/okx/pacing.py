"""OKX's rate rules as clocks the ingest loop asks (no I/O, time passed in).

- `ConnectPacer`: at most 3 new connections per second per IP.
- `SubscribeBudget`: at most 480 subscribe/unsubscribe ops per connection in any hour.
- `ResyncPacer`: books that lost sync are resubscribed in batches, each book no sooner than
  its backoff allows, so a burst of gaps never turns into a resubscribe storm.
- `Keepalive`: send the text `ping` after 20 s without a frame; no answer in 5 s = dead.
"""

from __future__ import annotations

from collections import deque

from mdpipe.venues.okx.protocol import (
    NEW_CONNECTIONS_PER_SECOND,
    PING_AFTER_S,
    PONG_TIMEOUT_S,
    SUBSCRIBE_OPS_PER_HOUR,
)

HOUR = 3600.0


class ConnectPacer:
    """Hands out connection start times, never more than `per_second` in any second."""

    __slots__ = ("per_second", "_starts")

    def __init__(self, per_second: int = NEW_CONNECTIONS_PER_SECOND) -> None:
        self.per_second = per_second
        self._starts: deque[float] = deque()

    def reserve(self, now: float) -> float:
        """Book a slot for one new connection; returns when it may start (>= now)."""
        starts = self._starts
        while starts and starts[0] <= now - 1.0:
            starts.popleft()
        at = now
        if len(starts) >= self.per_second:
            at = max(now, starts[-self.per_second] + 1.0)
        starts.append(at)
        return at


class SubscribeBudget:
    """The subscribe/unsubscribe ops one connection may still send this hour."""

    __slots__ = ("limit", "_ops")

    def __init__(self, limit: int = SUBSCRIBE_OPS_PER_HOUR) -> None:
        self.limit = limit
        self._ops: deque[float] = deque()

    def available(self, now: float) -> int:
        """Ops that may be sent now without breaking the hourly limit."""
        ops = self._ops
        while ops and ops[0] <= now - HOUR:
            ops.popleft()
        return self.limit - len(ops)

    def spend(self, now: float, n: int = 1) -> None:
        """Record `n` ops sent at `now`; ValueError if that breaks the limit."""
        if n > self.available(now):
            raise ValueError(f"{n} subscribe ops would exceed {self.limit} per hour")
        self._ops.extend([now] * n)


class ResyncPacer:
    """Which unsynced books to resubscribe now: batched, each on its own doubling backoff.

    `request(inst_id, now)` notes a book that needs a fresh snapshot; `due(now)` returns the
    books whose wait is over (one unsubscribe + one subscribe message covers them all).
    `synced(inst_id)` resets that book's backoff once it is exact again.
    """

    __slots__ = ("initial", "maximum", "_wait", "_due")

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._wait: dict[str, float] = {}
        self._due: dict[str, float] = {}

    def request(self, inst_id: str, now: float) -> float:
        """Schedule a resubscribe of `inst_id`; returns when it will be due."""
        if inst_id in self._due:
            return self._due[inst_id]
        wait = self._wait.get(inst_id, 0.0)
        at = now + wait
        self._due[inst_id] = at
        self._wait[inst_id] = min(max(wait * 2, self.initial), self.maximum)
        return at

    def due(self, now: float) -> list[str]:
        """The books to resubscribe now (removed from the schedule)."""
        ready = [inst_id for inst_id, at in self._due.items() if at <= now]
        for inst_id in ready:
            del self._due[inst_id]
        return ready

    def pending(self) -> int:
        """Books waiting for their resubscribe."""
        return len(self._due)

    def synced(self, inst_id: str) -> None:
        """The book is exact again: its next gap resubscribes without waiting."""
        self._wait.pop(inst_id, None)

    def cancel(self, inst_id: str) -> None:
        """Forget a scheduled resubscribe (e.g. the whole connection is being replaced)."""
        self._due.pop(inst_id, None)


class Keepalive:
    """OKX's text ping: `poll` says when to send `ping` and when the link is dead."""

    PING = "ping"
    DEAD = "dead"

    __slots__ = ("ping_after", "pong_timeout", "_last", "_pinged_at")

    def __init__(self, ping_after: float = PING_AFTER_S, pong_timeout: float = PONG_TIMEOUT_S):
        self.ping_after = ping_after
        self.pong_timeout = pong_timeout
        self._last = 0.0
        self._pinged_at = 0.0

    def start(self, now: float) -> None:
        """The connection just opened."""
        self._last = now
        self._pinged_at = 0.0

    def on_frame(self, now: float) -> None:
        """Any frame arrived (data, event, or `pong`)."""
        self._last = now
        self._pinged_at = 0.0

    def poll(self, now: float) -> str | None:
        """PING when a ping should be sent now, DEAD when the ping went unanswered, else None."""
        if self._pinged_at:
            return self.DEAD if now - self._pinged_at > self.pong_timeout else None
        if now - self._last >= self.ping_after:
            self._pinged_at = now
            return self.PING
        return None
