"""`mdpipe sim --venue okx`: the OKX options of the sim command and how they start the server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mdpipe.sim.faults import ScheduledFault
from mdpipe.sim.venues.okx import okx_instrument
from mdpipe.sim.venues.okx_server import OkxSimConfig, OkxSimulator
from mdpipe.sim.venues.okx_tape import TapeError

DEFAULT_SYMBOLS = ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]

_OPTIONS = [
    click.option(
        "--okx-books-ms",
        type=click.IntRange(min=0),
        default=100,
        show_default=True,
        help="OKX: `books` push interval in ms (0: one update per engine step).",
    ),
    click.option(
        "--okx-legacy",
        is_flag=True,
        help="OKX: data as recorded before 2026: non-zero checksums, some updates without seqId.",
    ),
    click.option(
        "--okx-no-snapshot",
        is_flag=True,
        help="OKX: subscribing to `books` sends no in-band snapshot (start from REST).",
    ),
    click.option(
        "--okx-keepalive",
        type=click.FloatRange(min=0),
        default=60.0,
        show_default=True,
        help="OKX: seconds without a change before a `books` keep-alive push (0: never).",
    ),
    click.option(
        "--okx-idle-close",
        type=click.FloatRange(min=0, min_open=True),
        default=30.0,
        show_default=True,
        help="OKX: close a connection (4004) after this many seconds without a message or push.",
    ),
    click.option(
        "--okx-max-ops",
        type=click.IntRange(min=1),
        default=480,
        show_default=True,
        help="OKX: subscribe/unsubscribe ops allowed per connection-hour.",
    ),
    click.option(
        "--okx-connect-rate",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        help="OKX: new connections accepted per second (more get HTTP 429).",
    ),
]


def okx_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the OKX options to a click command."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def run_okx(
    *,
    host: str,
    port: int,
    symbols: list[str] | None,
    rate: float,
    seed: int,
    levels: int,
    tape: Path | None,
    speed: float,
    max_speed: bool,
    loop_tape: bool,
    start_immediately: bool,
    start_clients: int,
    faults: list[ScheduledFault],
    okx: dict[str, Any],
    ready: Callable[[str, int], None],
) -> None:
    """Validate the OKX settings (click errors name the option) and serve until stopped."""
    chosen = symbols or DEFAULT_SYMBOLS
    for inst_id in chosen:
        try:
            okx_instrument(inst_id, seed)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--symbols") from None
    cfg = OkxSimConfig(
        host=host,
        port=port,
        symbols=chosen,
        rate=rate,
        seed=seed,
        levels=levels,
        tape=tape,
        speed=speed,
        max_speed=max_speed,
        loop_tape=loop_tape,
        start_immediately=start_immediately,
        start_clients=start_clients,
        faults=faults,
        books_ms=okx["okx_books_ms"],
        legacy=okx["okx_legacy"],
        in_band_snapshot=not okx["okx_no_snapshot"],
        keepalive_s=okx["okx_keepalive"],
        idle_close_s=okx["okx_idle_close"],
        max_ops_per_hour=okx["okx_max_ops"],
        connect_rate=okx["okx_connect_rate"],
    )
    try:
        sim = OkxSimulator(cfg)
    except TapeError as exc:
        raise click.BadParameter(str(exc), param_hint="--tape") from None
    asyncio.run(sim.serve(ready))
