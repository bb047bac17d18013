"""The simulated exchange's clock: every E/T/ts a synthetic market sends is read from it.

By default it is the wall clock. `mdpipe sim --speed N` in synthetic mode makes it run N
times as fast from the moment the simulator starts (a minute of exchange time in 60/N
seconds), so 1-minute klines close in seconds: timestamps stay consistent with each other
(trades, books, klines and tickers all read this clock, each message's times never run
backwards) while the message rate stays per wall-clock second. Tapes replay their recorded
times and leave the clock alone.
"""

from __future__ import annotations

import time

_speed = 1.0
_origin = 0.0  # wall-clock seconds at which the exchange clock started to run faster


def set_speed(speed: float) -> None:
    """Run the exchange clock `speed` times as fast as the wall clock from now on."""
    global _speed, _origin
    if not speed > 0:
        raise ValueError(f"clock speed must be positive, got {speed!r}")
    _speed, _origin = float(speed), time.time()


def speed() -> float:
    """How many exchange seconds pass per wall-clock second."""
    return _speed


def now() -> float:
    """The exchange's time, in seconds since the epoch."""
    wall = time.time()
    if _speed == 1.0:
        return wall
    return _origin + (wall - _origin) * _speed


def now_ms() -> int:
    """The exchange's time in milliseconds since the epoch (what E, T and ts carry)."""
    return int(now() * 1000)
