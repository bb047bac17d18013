"""Sans-IO pacing rules a venue hands the ingest: client messages per second, REST weight.

Both are fed times and replies, never sockets: the ingest asks how long to wait, does the
I/O, then reports what it sent and what the venue answered. Tests drive them directly.
"""

from __future__ import annotations

import math


class MessagePacer:
    """At most `rate` client messages in any one-second window of a connection."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self._sent: list[float] = []  # send times within the last second

    def wait(self, now: float) -> float:
        """Seconds until one more message may be sent (0: now)."""
        self._sent = [t for t in self._sent if now - t < 1.0]
        if len(self._sent) < self.rate:
            return 0.0
        return self._sent[0] + 1.0 - now

    def sent(self, now: float) -> None:
        """One message went out at `now`."""
        self._sent.append(now)

    def reset(self) -> None:
        """A new connection: its count starts from nothing."""
        self._sent.clear()


class WeightBudget:
    """A REST request-weight budget per wall-clock window, as the venue counts it per IP.

    The venue's own count (a used-weight response header) is authoritative: it includes
    what other processes on the same IP spent. Requests go out while the count plus one
    request's cost stays within `share` of the limit; beyond it they wait for the next
    window. A refusal (429, 418) blocks every request until its Retry-After has passed.
    """

    def __init__(
        self,
        limit: int,
        cost: int,
        *,
        window: float = 60.0,
        share: float = 0.9,
        refusal_wait: float = 60.0,
    ) -> None:
        if cost > limit * share:
            raise ValueError(f"a request of weight {cost} never fits {share:.0%} of {limit}")
        self.limit, self.cost, self.window, self.share = limit, cost, window, share
        self.refusal_wait = refusal_wait
        self.used = 0  # weight of the current window, as far as we know
        self.blocked_until = 0.0
        self.refusals = 0
        self._window_id = -1

    def _roll(self, now: float) -> None:
        wid = math.floor(now / self.window)
        if wid != self._window_id:
            self._window_id, self.used = wid, 0

    def wait(self, now: float) -> float:
        """Seconds (wall clock) until the next request may go out (0: now)."""
        if now < self.blocked_until:
            return self.blocked_until - now
        self._roll(now)
        if self.used + self.cost <= self.limit * self.share:
            return 0.0
        return (self._window_id + 1) * self.window - now

    def sent(self, now: float) -> None:
        """One request went out: count it until the venue's header says better."""
        self._roll(now)
        self.used += self.cost

    def answered(
        self, now: float, status: int, used: int | None, retry_after: float | None
    ) -> None:
        """The venue answered: take its used weight; a 429/418 blocks until Retry-After."""
        self._roll(now)
        if used is not None:
            self.used = max(self.used, used)
        if status in (429, 418):
            self.refusals += 1
            wait = retry_after if retry_after is not None else self.refusal_wait
            self.blocked_until = max(self.blocked_until, now + wait)

    def minimum_seconds(self, requests: int) -> float:
        """The least time `requests` requests take within the whole limit (from a fresh window)."""
        per_window = self.limit // self.cost
        return max(0, math.ceil(requests / per_window) - 1) * self.window
