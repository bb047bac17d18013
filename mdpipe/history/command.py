"""`mdpipe history trades|books SYMBOL` and `mdpipe replay`: the archive from the command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.compute as pc

from mdpipe import config as config_mod
from mdpipe.history.query import HistoryError, query_arrow

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
    for name in ("bid_price", "bid_qty", "ask_price", "ask_qty"):
        if name not in table.column_names:
            continue
        ix = table.column_names.index(name)
        col = table.column(name)
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
        else:
            width = pc.max(pc.list_value_length(col)).as_py() or 0 if len(col) else 0
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
    heads = [c.replace("_price", "").replace("_qty", "_qty") for c in cols]
    rows = [[_cell(r[c]) for c in cols] for r in shown]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    if table.num_rows > limit:
        click.echo(f"... {table.num_rows - limit} more rows (--limit N, or --format csv|parquet)")


def _history_query(
    kind: str,
    symbol: str,
    start: str | None,
    end: str | None,
    venue: str | None,
    fmt: str,
    output: str | None,
    limit: int | None,
    config: str | None,
    directory: str | None,
) -> None:
    root = archive_dir(config, directory)
    try:
        table, sel = query_arrow(kind, symbol, start, end, venue=venue, root=root)
    except HistoryError as exc:
        raise click.ClickException(str(exc)) from None
    for path, why in sel.skipped.items():
        click.echo(f"skipped {path}: not a readable Parquet file ({why})", err=True)
    if limit is not None:
        table = table.slice(0, limit)
    if table.num_rows == 0:
        click.echo(f"no {kind} of {symbol} in that range", err=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if not output:
            raise click.ClickException("--format parquet needs --output FILE")
        pq.write_table(table, output, compression="zstd")
        click.echo(f"wrote {table.num_rows} {kind} to {output}", err=True)
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


def _query_options(f):  # noqa: ANN001, ANN202
    f = click.option("--dir", "directory", help="The archive (default: history.dir of --config).")(
        f
    )
    f = click.option("--config", help="TOML config whose history.dir to read.")(f)
    f = click.option("--limit", type=click.IntRange(min=1), help="At most N rows.")(f)
    f = click.option("--output", "-o", help="Write to FILE (needed for --format parquet).")(f)
    f = click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "csv", "parquet"]),
        default="table",
        show_default=True,
    )(f)
    f = click.option("--venue", help="Only this venue (e.g. binance-futures).")(f)
    f = click.option("--to", "end", help="End, exclusive (a bare date: through that day). UTC.")(f)
    f = click.option("--from", "start", help="Start, e.g. 2026-12-01 or 2026-12-01T10:30. UTC.")(f)
    return click.argument("symbol")(f)


@click.group("history")
def history_command() -> None:
    """Query the Parquet archive the archiver writes ([history] enabled)."""


@history_command.command("trades")
@_query_options
def trades_command(
    symbol: str,
    start: str | None,
    end: str | None,
    venue: str | None,
    fmt: str,
    output: str | None,
    limit: int | None,
    config: str | None,
    directory: str | None,
) -> None:
    """Archived trades of SYMBOL, oldest first."""
    _history_query("trades", symbol, start, end, venue, fmt, output, limit, config, directory)


@history_command.command("books")
@_query_options
def books_command(
    symbol: str,
    start: str | None,
    end: str | None,
    venue: str | None,
    fmt: str,
    output: str | None,
    limit: int | None,
    config: str | None,
    directory: str | None,
) -> None:
    """Archived book records of SYMBOL, oldest first (table: best level only)."""
    _history_query("books", symbol, start, end, venue, fmt, output, limit, config, directory)


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

    Strategies read them with attach(INSTANCE, "books") / attach(INSTANCE, "trades"), the same
    code as on a live instance.
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
