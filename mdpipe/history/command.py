"""`mdpipe history trades|books|tickers|candles SYMBOL` and `mdpipe replay`: the archive from
the command line. Every query command shares one set of options and one code path."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.compute as pc

from mdpipe import config as config_mod
from mdpipe.history.query import HistoryError, query_arrow
from mdpipe.history.schema import LEVEL_COLUMNS

TABLE_COLUMNS = {
    "trades": ["ts", "venue", "symbol", "price", "qty", "side", "trade_id"],
    "books": [
        "ts",
        "venue",
        "symbol",
        "last_update_id",
        "flags",
        "bid_price",
        "bid_qty",
        "ask_price",
        "ask_qty",
    ],
    "tickers": [
        "ts",
        "venue",
        "symbol",
        "mark_price",
        "index_price",
        "funding_rate",
        "next_funding_ts_ns",
        "open_interest",
        "last_price",
        "volume_24h",
    ],
    "candles": [
        "ts",
        "venue",
        "symbol",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "trades",
        "revision",
        "flags",
    ],
}
TABLE_ROWS = 50  # rows shown by --format table without --limit


def archive_dir(config: str | None, directory: str | None) -> Path:
    """The archive to read: --dir, else history.dir of the config (or its default)."""
    if directory:
        return Path(directory)
    try:
        return Path(config_mod.load(config).history.dir)
    except config_mod.ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def flat_levels(table: pa.Table) -> pa.Table:
    """Book level lists as one column per level (bid_price_0, ...), for CSV."""
    for name in LEVEL_COLUMNS:
        if name not in table.column_names:
            continue
        col = table.column(name)
        if not (pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type)):
            continue  # a ticker's best bid and ask are plain numbers
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
        else:
            width = pc.max(pc.list_value_length(col)).as_py() or 0 if len(col) else 0
        ix = table.column_names.index(name)
        table = table.remove_column(ix)
        for level in reversed(range(width)):
            table = table.add_column(ix, f"{name}_{level}", pc.list_element(col, level))
    return table


def _cell(value: object) -> str:
    if isinstance(value, list):
        return f"{value[0]:g}" if value else "-"
    if isinstance(value, float):
        return f"{value:g}"
    if hasattr(value, "isoformat"):
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return str(value)


def print_table(table: pa.Table, kind: str, limit: int) -> None:
    """Aligned text: the main columns (best level only for books), the first `limit` rows."""
    cols = [c for c in TABLE_COLUMNS[kind] if c in table.column_names]
    shown = table.select(cols).slice(0, limit).to_pylist()
    heads = [c.removesuffix("_price") if kind == "books" else c for c in cols]
    rows = [[_cell(r[c]) for c in cols] for r in shown]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    if table.num_rows > limit:
        click.echo(f"... {table.num_rows - limit} more rows (--limit N, or --format csv|parquet)")


def run_query(kind: str, symbol: str, fmt: str, output: str | None, **options: Any) -> None:
    """One history query from the command line, any kind: the rows in the chosen format,
    skipped files named on stderr, bad input one line (a ClickException)."""
    limit = options.pop("limit")
    root = archive_dir(options.pop("config"), options.pop("directory"))
    if fmt == "parquet" and not output:
        raise click.ClickException("--format parquet needs --output FILE")
    try:
        table, sel = query_arrow(kind, symbol, root=root, **options)
    except HistoryError as exc:
        raise click.ClickException(str(exc)) from None
    for path, why in sel.skipped.items():
        click.echo(f"skipped {path}: not a readable Parquet file ({why})", err=True)
    if limit is not None:
        table = table.slice(0, limit)
    what = f"{options['interval']} candles" if kind == "candles" else kind
    if table.num_rows == 0:
        click.echo(f"no {what} of {symbol} in that range", err=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, output, compression="zstd")
        click.echo(f"wrote {table.num_rows} {what} to {output}", err=True)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        sink = output or sys.stdout.buffer
        table = flat_levels(table)
        for name in ("symbol", "venue"):  # dictionaries to plain text for CSV
            ix = table.column_names.index(name)
            table = table.set_column(ix, name, table.column(name).cast(pa.string()))
        pcsv.write_csv(table, sink)
    elif table.num_rows:
        print_table(table, kind, limit or TABLE_ROWS)


QUERY_OPTIONS = (  # every history query command's options, outermost first
    click.argument("symbol"),
    click.option("--from", "start", help="Start, e.g. 2026-12-01 or 2026-12-01T10:30. UTC."),
    click.option("--to", "end", help="End, exclusive (a bare date: through that day). UTC."),
    click.option("--venue", help="Only this venue (e.g. binance-futures)."),
    click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "csv", "parquet"]),
        default="table",
        show_default=True,
    ),
    click.option("--output", "-o", help="Write to FILE (needed for --format parquet)."),
    click.option("--limit", type=click.IntRange(min=1), help="At most N rows."),
    click.option("--config", help="TOML config whose history.dir to read."),
    click.option("--dir", "directory", help="The archive (default: history.dir of --config)."),
)
CANDLE_OPTIONS = (
    click.option(
        "--interval",
        default="1m",
        show_default=True,
        help="Candle interval, as in the feed's candles list (1s, 1m, ...).",
    ),
    click.option(
        "--revisions",
        is_flag=True,
        help="Every record the ring carried (amended candles once per revision), not only "
        "the newest revision of each interval.",
    ),
)


@click.group("history")
def history_command() -> None:
    """Query the Parquet archive the archiver writes ([history] enabled)."""


def _query_command(kind: str, doc: str, extra: tuple = ()) -> None:
    """Register `mdpipe history KIND SYMBOL ...`: the shared options, then the kind's own."""

    def command(**options: Any) -> None:
        run_query(kind, options.pop("symbol"), options.pop("fmt"), options.pop("output"), **options)

    command.__doc__ = doc
    for option in reversed(QUERY_OPTIONS + extra):
        command = option(command)
    history_command.command(kind)(command)


_query_command("trades", "Archived trades of SYMBOL, oldest first.")
_query_command("books", "Archived book records of SYMBOL, oldest first (table: best level only).")
_query_command(
    "tickers",
    "Archived ticker records of SYMBOL (mark/index price, funding, open interest, 24 h), "
    "oldest first; NaN where the venue never sent a field.",
)
_query_command(
    "candles",
    "Archived candles of SYMBOL at --interval, by interval start, oldest first.",
    CANDLE_OPTIONS,
)


@click.command("replay")
@click.option("--from", "start", help="Start of the archived range (UTC), e.g. 2026-12-01T10:00.")
@click.option("--to", "end", help="End, exclusive (a bare date: through that day).")
@click.option("--symbols", help="Comma-separated symbols (default: every archived symbol).")
@click.option("--venue", help="Only this venue.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Pace: N times the original speed.",
)
@click.option("--max", "as_fast", is_flag=True, help="As fast as the rings take the records.")
@click.option(
    "--instance",
    default="replay",
    show_default=True,
    help="The replay instance whose rings attach() reads.",
)
@click.option(
    "--capacity",
    type=int,
    help="Ring slots (a power of two; default fits the replay, up to 262144).",
)
@click.option("--config", help="TOML config whose history.dir to read.")
@click.option("--dir", "directory", help="The archive (default: history.dir of --config).")
def replay_command(
    start: str | None,
    end: str | None,
    symbols: str | None,
    venue: str | None,
    speed: float,
    as_fast: bool,
    instance: str,
    capacity: int | None,
    config: str | None,
    directory: str | None,
) -> None:
    """Write archived records into the rings of a replay instance, FLAG_REPLAYED set.

    Strategies read them with attach(INSTANCE, "books"), "trades", "tickers" and candles(
    INSTANCE, SYMBOL, "1m"), the same code as on a live instance.
    """
    import signal
    import threading

    from mdpipe.history import replay
    from mdpipe.shm.writer import WriterAliveError

    root = archive_dir(config, directory)
    wanted = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    try:
        found = replay.load(start, end, root=root, symbol_list=wanted, venue=venue)
    except HistoryError as exc:
        raise click.ClickException(str(exc)) from None
    if not found:
        raise click.ClickException("nothing archived in that range")
    try:
        streams = replay.build_streams(instance, found, capacity)
    except (WriterAliveError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    total = sum(len(s.ts) for s in streams)
    rings = ", ".join(s.writer.ring for s in streams)
    pace = "at --max" if as_fast else f"at {speed:g}x"
    click.echo(f"replaying {total} records into instance {instance!r} ({rings}) {pace}", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    t0 = time.perf_counter()
    try:
        n = replay.run(streams, None if as_fast else speed, stop)
    finally:
        for s in streams:
            s.writer.close()
    dt = time.perf_counter() - t0
    click.echo(
        f"replayed {n} records in {dt:.3f} s ({n / dt if dt else 0:,.0f} records/s)", err=True
    )
