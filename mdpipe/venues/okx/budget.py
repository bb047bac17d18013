"""OKX's 480 subscribe/unsubscribe ops per connection-hour, as a clock-driven budget."""

from __future__ import annotations

from collections import deque

from mdpipe.venues.okx.protocol import SUBSCRIBE_OPS_PER_HOUR

HOUR = 3600.0


class SubscribeBudget:
    """The ops one connection may still send this hour (time is passed in: no I/O)."""

    __slots__ = ("limit", "_ops")

    def __init__(self, limit: int = SUBSCRIBE_OPS_PER_HOUR) -> None:
        self.limit = limit
        self._ops: deque[float] = deque()

    def available(self, now: float) -> int:
        """Ops that may be sent at `now` without breaking the hourly limit."""
        ops = self._ops
        while ops and ops[0] <= now - HOUR:
            ops.popleft()
        return self.limit - len(ops)

    def spend(self, now: float, n: int = 1) -> bool:
        """Record `n` ops sent at `now`; False (nothing recorded) if that breaks the limit."""
        if n > self.available(now):
            return False
        self._ops.extend([now] * n)
        return True
