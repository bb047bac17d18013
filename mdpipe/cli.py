"""The `mdpipe` command: assembles the subcommands each subsystem defines in its own module.

Every expected error is printed one way, `mdpipe <command>: <message>` on stderr with no
traceback, and exits 2 for usage and config errors, 1 for state errors (not running,
already running, a segment or file that is not ours, permissions).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NoReturn

import click

EXIT_STATE = 1
EXIT_USAGE = 2

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
    "record": ("mdpipe.record.command", "record_command"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    command_name = ""  # the subcommand being run, for error lines

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name]
        self.command_name = name
        return getattr(importlib.import_module(module), attr)

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> NoReturn:
        """Run a subcommand; expected errors become one line and an exit code."""
        try:
            code = super().main(args, prog_name or "mdpipe", standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            self._fail(exc.format_message() + hint, EXIT_USAGE)
        except click.ClickException as exc:
            self._fail(exc.format_message(), exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            sys.exit(130)
        except BrokenPipeError:
            _quiet_stdout()
            sys.exit(0)
        except Exception as exc:  # noqa: BLE001 - sorted into expected and unexpected below
            code = expected_exit_code(exc)
            if code is None:
                raise
            self._fail(error_text(exc), code)
        sys.exit(code if isinstance(code, int) else 0)

    def _fail(self, message: str, code: int) -> NoReturn:
        where = f"mdpipe {self.command_name}" if self.command_name else "mdpipe"
        click.echo(f"{where}: {message}", err=True)
        sys.exit(code)


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def error_text(exc: BaseException) -> str:
    """The one line a user sees for an expected error."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc).strip().replace("\n", " ") or type(exc).__name__


# Errors that describe the state of the machine, not a bug; matched by name so that a
# class may move between modules without this list going stale.
STATE_ERRORS = frozenset(
    {
        "LayoutError",
        "RuntimeStateError",
        "AlreadyRunningError",
        "StartError",
        "WriterAliveError",
        "WriterGoneError",
        "NoSuchRingError",
        "NotRunningError",
        "ExistentialError",  # posix_ipc: no such segment
        "PermissionsError",  # posix_ipc: not allowed to open it
    }
)


def expected_exit_code(exc: BaseException) -> int | None:
    """2 for a config error, 1 for a state error, None for a bug (shown with its traceback)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "ConfigError" in names:
        return EXIT_USAGE
    if names & STATE_ERRORS or isinstance(exc, OSError):
        return EXIT_STATE
    return None


@click.group(cls=LazyGroup)
@click.version_option(package_name="mdpipe")
def main() -> None:
    """mdpipe: exchange order books and trades in shared memory and Redis."""


if __name__ == "__main__":  # `python -m mdpipe.cli`: how the supervisor runs `mdpipe sim`
    main()
