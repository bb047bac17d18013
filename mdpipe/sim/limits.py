"""The exchange's limits the simulator enforces: URL length, message size, REST weight.

REST weight is counted per wall-clock minute for the whole simulator (one IP, as every
client here shares 127.0.0.1). A request beyond the minute's limit gets 429 with
Retry-After (the seconds left in the minute); a request while a 429's Retry-After is
still running gets 418 and bans every REST request for `ban_seconds`, as the exchange
bans IPs that keep asking.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from mdpipe.sim.rest import Reply, error

MAX_URL_LENGTH = 4096  # request-target characters; longer: 414
MAX_MESSAGE_BYTES = 8192  # one client message; larger: close 1009
MAX_SUBSCRIBE_PARAMS = 200  # streams in one SUBSCRIBE / UNSUBSCRIBE
WEIGHT_LIMIT = {"futures": 2400, "spot": 6000}
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


class WeightLimiter:
    """REST weight per minute, 429 beyond it, 418 bans for asking during a 429."""

    def __init__(self, limit: int, ban_seconds: float) -> None:
        self.limit = limit
        self.ban_seconds = ban_seconds
        self.used = 0
        self._minute = -1
        self._retry_until = 0.0  # a 429's Retry-After runs until then
        self._banned_until = 0.0
        self.refused: Counter[int] = Counter()
        self.peak = 0

    def _roll(self, now: float) -> None:
        minute = math.floor(now / 60)
        if minute != self._minute:
            self._minute, self.used = minute, 0

    def headers(self) -> list[tuple[str, str]]:
        """The used-weight header every REST answer carries."""
        return [(WEIGHT_HEADER, str(self.used))]

    def admit(self, now: float, weight: int) -> Reply | None:
        """Count a request of `weight` at wall time `now`; the refusal to answer, or None."""
        self._roll(now)
        if now < self._banned_until:
            return self._ban_reply(now)
        if now < self._retry_until:
            self._banned_until = now + self.ban_seconds
            return self._ban_reply(now)
        if self.used + weight > self.limit:
            retry = math.ceil((self._minute + 1) * 60 - now)
            self._retry_until = now + retry
            self.refused[429] += 1
            return error(
                429,
                -1003,
                f"Too many requests; current limit of IP(127.0.0.1) is {self.limit} requests "
                "per minute. Please use the websocket for live updates to avoid polling the API.",
                [("Retry-After", str(retry)), *self.headers()],
            )
        self.used += weight
        self.peak = max(self.peak, self.used)
        return None

    def _ban_reply(self, now: float) -> Reply:
        self.refused[418] += 1
        until_ms = int(self._banned_until * 1000)
        return error(
            418,
            -1003,
            f"Way too many requests; IP(127.0.0.1) banned until {until_ms}. "
            "Please use the websocket for live updates to avoid bans.",
            [("Retry-After", str(math.ceil(self._banned_until - now))), *self.headers()],
        )

    def stats(self) -> dict[str, Any]:
        """What /_sim/stats reports under rest_weight."""
        return {
            "limit": self.limit,
            "used": self.used,
            "peak": self.peak,
            "refused_429": self.refused[429],
            "refused_418": self.refused[418],
        }
