"""The `mdpipe` command: assembles the subcommands each subsystem defines in its own module."""

from __future__ import annotations

import importlib

import click

# (module, attribute) of every subcommand; imported lazily so `mdpipe --help` stays fast
# and a reader-only install never imports the ingest or publisher stacks.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sim": ("mdpipe.sim.command", "sim_command"),
    "start": ("mdpipe.supervisor", "start_command"),
    "stop": ("mdpipe.supervisor", "stop_command"),
    "stats": ("mdpipe.stats", "stats_command"),
    "tail": ("mdpipe.tail", "tail_command"),
    "history": ("mdpipe.history.command", "history_command"),
    "replay": ("mdpipe.history.command", "replay_command"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="mdpipe")
def main() -> None:
    """mdpipe: exchange order books and trades in shared memory and Redis."""


if __name__ == "__main__":  # `python -m mdpipe.cli`: how the supervisor runs `mdpipe sim`
    main()
