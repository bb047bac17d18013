"""Binance spot and USD-M futures: the simulator's original server (`mdpipe.sim.server`)."""

from __future__ import annotations

from mdpipe.sim.config import SimConfig
from mdpipe.sim.instruments import MARKETS
from mdpipe.sim.server import Simulator

__all__ = ["MARKETS", "build"]


def build(cfg: SimConfig) -> Simulator:
    """The Binance simulator (the market is detected from a tape when not given)."""
    return Simulator(cfg)
