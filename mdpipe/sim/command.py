"""`mdpipe sim`: run the exchange simulator (synthetic market or tape replay)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from mdpipe import logs
from mdpipe.sim import clock
from mdpipe.sim.config import START_IMMEDIATELY, START_ON_CONNECT, SimConfig
from mdpipe.sim.faults import FaultError, parse_duration, parse_fault_spec
from mdpipe.sim.instruments import universe as generated_universe
from mdpipe.sim.tape import TapeError
from mdpipe.sim.venues import DEFAULT_VENUE, build, venue_module, venue_names
from mdpipe.sim.venues._okx.options import okx_options

# The first stdout line, exactly; SimProcess and scripts wait for it. Nothing else goes
# to stdout (logs go to stderr).
READY_LINE = "mdpipe sim listening on http://{host}:{port}"


class Duration(click.ParamType):
    """Seconds given as 500ms, 10s, 3m, 24h or a bare number."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except FaultError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=9443, show_default=True, help="TCP port; 0 picks a free one (see stdout)."
)
@click.option(
    "--venue",
    type=click.Choice(venue_names()),
    default=DEFAULT_VENUE,
    show_default=True,
    help="Exchange whose wire format is served.",
)
@click.option(
    "--market",
    default=None,
    help="The venue's market: binance futures|spot (default futures, or detected from a "
    "tape), bybit linear|spot, okx swap|spot (default: the first).",
)
@click.option(
    "--symbols",
    default="BTCUSDT,ETHUSDT",
    show_default=True,
    help="Synthetic mode: comma-separated symbols.",
)
@click.option(
    "--universe",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Synthetic mode: add this many generated USDT symbols (AAAAUSDT, AAABUSDT, ...) "
    "to --symbols, a whole-market stand-in.",
)
@click.option(
    "--weight-limit",
    type=click.IntRange(min=1),
    default=None,
    help="REST weight per minute before 429 (default: the market's, 2400 futures).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=2000.0,
    show_default=True,
    help="Synthetic mode: messages/s over all symbols on the per-event streams "
    "(<sym>@depth@0ms, @bookTicker, @trade).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of market and faults.")
@click.option(
    "--levels",
    type=click.IntRange(min=20),
    default=400,
    show_default=True,
    help="Synthetic mode: typical book depth per side, in price levels.",
)
@click.option(
    "--tape",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Replay this recorded tape (.gz or plain) instead of a synthetic market.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Tape mode: replay at this multiple of the recorded pace. Synthetic mode: the "
    "exchange clock (every E/T/ts sent) runs this many times as fast as the wall clock, so "
    "1-minute klines close in seconds; the message rate stays per wall-clock second.",
)
@click.option(
    "--max", "max_speed", is_flag=True, help="Tape mode: replay as fast as the clients read."
)
@click.option("--loop", "loop_tape", is_flag=True, help="Tape mode: start over at the end.")
@click.option(
    "--start",
    type=click.Choice([START_ON_CONNECT, START_IMMEDIATELY]),
    default=START_ON_CONNECT,
    show_default=True,
    help="Begin the market/replay when clients have subscribed, or at once.",
)
@click.option(
    "--start-clients",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --start on-connect: how many subscribed connections to wait for.",
)
@click.option(
    "--no-snapshot", is_flag=True, help="REST depth always answers 503 (no book can be exact)."
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND[:k=v,...]",
    help="Scheduled fault, e.g. gap:every=10s  disconnect:every=30s,variant=close  "
    "rest_429:at=5s,count=2. Keys: every, at, count, seconds, symbol, variant, delay, "
    "retry_after. Repeatable.",
)
@click.option(
    "--ping-interval",
    type=DURATION,
    default=None,
    help="Server ping period [180s futures, 20s spot].",
)
@click.option(
    "--ping-timeout",
    type=DURATION,
    default=None,
    help="Close a connection whose pong is this late [10m futures, 1m spot].",
)
@click.option(
    "--max-connection-age",
    type=DURATION,
    default="24h",
    show_default=True,
    help="Close every connection this long after it opened.",
)
@click.option(
    "--max-incoming-rate",
    type=click.IntRange(min=0),
    default=None,
    help="Client messages/s before disconnection [10 futures, 5 spot; 0 = unlimited].",
)
@click.option(
    "--max-send-buffer",
    type=click.IntRange(min=1024),
    default=64 * 1024 * 1024,
    show_default=True,
    help="Bytes a client may fall behind before it is dropped.",
)
@click.option(
    "--tick", type=DURATION, default="1ms", show_default=True, help="Send batching period."
)
@click.option(
    "--rest-wait",
    type=DURATION,
    default="30s",
    show_default=True,
    help="Tape mode: how long a REST call waits for the tape's snapshot before a 503.",
)
@click.option(
    "--oversized-bytes",
    type=click.IntRange(min=1024),
    default=2 * 1024 * 1024,
    show_default=True,
    help="Frame size of the malformed 'oversized' message.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@okx_options
def sim_command(
    host: str,
    port: int,
    venue: str,
    market: str | None,
    symbols: str,
    universe: int,
    weight_limit: int | None,
    rate: float,
    seed: int,
    levels: int,
    tape: Path | None,
    speed: float,
    max_speed: bool,
    loop_tape: bool,
    start: str,
    start_clients: int,
    no_snapshot: bool,
    faults: tuple[str, ...],
    ping_interval: float | None,
    ping_timeout: float | None,
    max_connection_age: float,
    max_incoming_rate: int | None,
    max_send_buffer: int,
    tick: float,
    rest_wait: float,
    oversized_bytes: int,
    log_level: str,
    **venue_options: Any,
) -> None:
    """An exchange simulator (Binance by default; --venue bybit|okx): streams and REST on one port.

    Binance futures routes: /public/stream (depth, bookTicker), /market/stream (trade, aggTrade,
    markPrice), /ws/<stream>; REST /fapi/v1/depth. Spot: /stream, /ws/<stream>, REST
    /api/v3/depth. Control: POST /_sim/fault, GET /_sim/stats.

    The first stdout line is exactly "mdpipe sim listening on http://HOST:PORT" (see
    mdpipe/sim/README.md).
    """
    # Text on stderr by default; JSON lines when the supervisor exported that choice.
    logs.setup_child("text", log_level)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    ctx = click.get_current_context()
    source = ctx.get_parameter_source("symbols")
    if tape is not None and source is not None and source.name != "DEFAULT":
        raise click.UsageError("--symbols is for synthetic mode; a tape brings its own symbols")
    if tape is None and (loop_tape or max_speed):
        raise click.UsageError("--loop and --max need --tape")
    markets = venue_module(venue).MARKETS
    if market is not None and market not in markets:
        raise click.BadParameter(
            f"{market!r} is not a {venue} market ({', '.join(markets)})", param_hint="--market"
        )
    symbol_list = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    symbol_list = list(dict.fromkeys(symbol_list + generated_universe(universe)))
    if not symbol_list:
        raise click.UsageError("--symbols is empty")
    try:
        scheduled = [parse_fault_spec(spec) for spec in faults]
    except FaultError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None
    cfg = SimConfig(
        host=host,
        port=port,
        venue=venue,
        market=market,
        symbols=symbol_list,
        rate=rate,
        seed=seed,
        levels=levels,
        tape=tape,
        speed=speed,
        max_speed=max_speed,
        loop_tape=loop_tape,
        start=start,
        start_clients=start_clients,
        no_snapshot=no_snapshot,
        faults=scheduled,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        max_connection_age=max_connection_age,
        max_incoming_rate=max_incoming_rate,
        max_send_buffer=max_send_buffer,
        tick=tick,
        rest_wait=rest_wait,
        oversized_bytes=oversized_bytes,
        weight_limit=weight_limit,
        venue_options=venue_options,
    )
    try:
        asyncio.run(_run(cfg))
    except TapeError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None


async def _run(cfg: SimConfig) -> None:
    if cfg.tape is None:
        clock.set_speed(cfg.speed)  # a tape replays its own times
    simulator = build(cfg)

    def ready(host: str, port: int) -> None:
        print(READY_LINE.format(host=host, port=port), flush=True)
        logging.getLogger("mdpipe.sim").info(
            "%s %s %s simulator ready%s",
            cfg.venue,
            simulator.market,
            "tape" if cfg.tape else "synthetic",
            ""
            if cfg.start == START_IMMEDIATELY
            else f" (starts when {cfg.start_clients} client(s) subscribe)",
        )

    await simulator.serve(ready)
