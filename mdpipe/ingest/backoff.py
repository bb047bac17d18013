"""Reconnect and retry delays: exponential backoff with full jitter."""

from __future__ import annotations

import random


class Backoff:
    """Delays of uniform(0, min(cap, initial * 2**attempt)): spreads a fleet's reconnects apart."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = max(cap, initial)
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling up to the cap."""
        ceiling = min(self.cap, self.initial * (1 << min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        """Start again from the initial delay (after a connection proved healthy)."""
        self.attempt = 0
