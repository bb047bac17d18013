"""OKX v5 public (SWAP and SPOT): the simulator's entry (`mdpipe sim --venue okx`).

The parts live in `_okx`: the wire format (`wire`), the synthetic market (`market`), tape
replay (`tape`) and the server (`server`); the `--okx-*` options are in `_okx.options`.
"""

from __future__ import annotations

import re
from typing import Any

import click

from mdpipe.sim.venues._okx.options import okx_settings
from mdpipe.sim.venues._okx.server import OkxSimConfig, OkxSimulator

MARKETS = ("swap", "spot")
DEFAULT_SYMBOLS = {"swap": ["BTC-USDT-SWAP", "ETH-USDT-SWAP"], "spot": ["BTC-USDT", "ETH-USDT"]}
_BINANCE_DEFAULT = ["BTCUSDT", "ETHUSDT"]  # the sim command's default symbols
_INST_ID = re.compile(r"[A-Z0-9]{1,15}-[A-Z0-9]{1,15}(-SWAP)?")

__all__ = ["MARKETS", "build"]


def build(cfg: Any) -> OkxSimulator:
    """The OKX simulator for a SimConfig; a symbol in the wrong form is a usage error."""
    market = cfg.market or MARKETS[0]
    symbols = list(cfg.symbols)
    if symbols == _BINANCE_DEFAULT:
        symbols = DEFAULT_SYMBOLS[market]
    form = "BTC-USDT-SWAP" if market == "swap" else "BTC-USDT"
    for inst_id in symbols:
        if not _INST_ID.fullmatch(inst_id) or inst_id.endswith("-SWAP") != (market == "swap"):
            raise click.BadParameter(
                f"{inst_id} is not an okx {market} instId like {form}", param_hint="--symbols"
            )
    settings = OkxSimConfig(
        host=cfg.host,
        port=cfg.port,
        market=market,
        symbols=symbols,
        rate=cfg.rate,
        seed=cfg.seed,
        levels=cfg.levels,
        tape=cfg.tape,
        speed=cfg.speed,
        max_speed=cfg.max_speed,
        loop_tape=cfg.loop_tape,
        start_immediately=cfg.start == "immediately",
        start_clients=cfg.start_clients,
        faults=list(cfg.faults),
        max_send_buffer=cfg.max_send_buffer,
        tick=cfg.tick,
        oversized_bytes=cfg.oversized_bytes,
        **okx_settings(getattr(cfg, "venue_options", {}) or {}),
    )
    return OkxSimulator(settings)
