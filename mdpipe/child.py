"""What every supervised child process (ingest, publisher, archiver) starts with: the same
command line, its config loaded with one-line errors, logging, and a stop event on signals."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from mdpipe import config, logs


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """--config, --set KEY=VALUE (repeatable) and --instance; callers add their own."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", help="TOML config file (default: built-in defaults)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    p.add_argument("--instance", help="instance name (overrides the config's)")
    return p


def load_config(args: argparse.Namespace, name: str, **load: bool) -> config.Config | None:
    """The config of parsed args with logging set up, or None after one line on stderr
    (`mdpipe <name>: <key>: ...`): the caller exits 2."""
    overrides: Sequence[str] = [
        *args.set,
        *([f"instance={args.instance}"] if args.instance else []),
    ]
    try:
        cfg = config.load(args.config, overrides=list(overrides), **load)
    except config.ConfigError as exc:
        print(f"mdpipe {name}: {exc}", file=sys.stderr)
        return None
    # The supervisor's choice (exported to its children) wins over the file's.
    logs.setup_child(cfg.supervisor.log_format, cfg.supervisor.log_level)
    return cfg


def stop_on_signals(log: logging.Logger | None = None) -> threading.Event:
    """An event set by SIGTERM or SIGINT, the supervisor's and a terminal's ways to stop us."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if log is not None:
            log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop
