"""`python -m mdpipe.publisher`: run the publisher of an instance until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from mdpipe import config as config_mod
from mdpipe import logs
from mdpipe.publisher.loop import run_publisher
from mdpipe.shm.writer import WriterAliveError

log = logging.getLogger("mdpipe.publisher")


def main(argv: Sequence[str] | None = None) -> int:
    """The `python -m mdpipe.publisher` entry point; exits 0 on SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(
        prog="python -m mdpipe.publisher", description="Tail the rings of an instance into Redis."
    )
    ap.add_argument("--config", help="TOML config file (default: built-in defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    ap.add_argument("--instance", help="instance name (overrides the config)")
    args = ap.parse_args(argv)
    overrides = list(args.set) + ([f"instance={args.instance}"] if args.instance else [])
    try:
        cfg = config_mod.load(args.config, overrides=overrides)
    except config_mod.ConfigError as exc:
        print(f"mdpipe publisher: {exc}", file=sys.stderr)
        return 2
    # The supervisor's choice (exported to its children) wins over the file's.
    logs.setup_child(cfg.supervisor.log_format, cfg.supervisor.log_level)
    if not cfg.publisher.enabled:
        log.info("publisher.enabled is false: nothing to do")
        return 0
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    gc.freeze()  # what exists now lives forever: keep the collector from walking it
    try:
        final = run_publisher(cfg, stop)
    except WriterAliveError as exc:
        log.error("another publisher runs for instance %s: %s", cfg.instance, exc)
        return 1
    log.info("stopped: %s", ", ".join(f"{k}={v}" for k, v in final.items() if v))
    return 0
