"""`mdpipe record`: run an instance with [record] enabled (tapes of every raw frame)."""

from __future__ import annotations

import click

from mdpipe.supervisor import start_command


@click.command("record")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="MDPIPE_CONFIG",
    help="TOML config file (default: built-in defaults = config/default.toml).",
)
@click.option("--instance", help="Instance name (overrides the config's `instance`).")
@click.option("--dir", "directory", help="Where the tapes go (record.dir, default var/tapes).")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key."
)
@click.pass_context
def record_command(
    ctx: click.Context,
    config_path: str | None,
    instance: str | None,
    directory: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Run an instance that records every raw frame and REST snapshot of its ingest into
    tapes `mdpipe sim --tape` replays: `mdpipe start` with [record] enabled; Ctrl-C stops it."""
    sets = [*overrides, "record.enabled=true"]
    if directory:
        sets.append(f"record.dir={directory}")
    ctx.invoke(
        start_command,
        config_path=config_path,
        instance=instance,
        overrides=tuple(sets),
        log_format=None,
        keep_segments=False,
    )
