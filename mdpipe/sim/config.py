"""Simulator settings and the exchange's per-market connection defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdpipe.sim.faults import ScheduledFault
from mdpipe.sim.instruments import FUTURES

START_ON_CONNECT = "on-connect"
START_IMMEDIATELY = "immediately"

# Binance's documented keepalive: futures ping every 3 min and wait 10 min for the pong,
# spot every 20 s and 1 min; incoming control messages are limited per second.
PING_INTERVAL = {FUTURES: 180.0, "spot": 20.0}
PING_TIMEOUT = {FUTURES: 600.0, "spot": 60.0}
INCOMING_RATE = {FUTURES: 10, "spot": 5}


@dataclass
class SimConfig:
    """Everything `mdpipe sim` can be told; None means the market's default."""

    host: str = "127.0.0.1"
    port: int = 9443
    venue: str = "binance"
    market: str | None = None
    symbols: list[str] = field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"])
    rate: float = 2000.0
    seed: int = 1
    levels: int = 400
    tape: Path | None = None
    speed: float = 1.0
    max_speed: bool = False
    loop_tape: bool = False
    start: str = START_ON_CONNECT
    start_clients: int = 1
    no_snapshot: bool = False
    faults: list[ScheduledFault] = field(default_factory=list)
    ping_interval: float | None = None
    ping_timeout: float | None = None
    max_connection_age: float = 86400.0
    max_incoming_rate: int | None = None
    max_send_buffer: int = 64 * 1024 * 1024
    tick: float = 0.001
    rest_wait: float = 30.0
    oversized_bytes: int = 2 * 1024 * 1024
    venue_options: dict[str, Any] = field(default_factory=dict)  # a venue's own (--okx-*)
