"""`python -m mdpipe.history`: run the archiver of an instance until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from mdpipe import config as config_mod
from mdpipe import logs
from mdpipe.affinity import pin_to_core
from mdpipe.history.archiver import Archiver
from mdpipe.shm.writer import WriterAliveError

log = logging.getLogger("mdpipe.archiver")


def main(argv: Sequence[str] | None = None) -> int:
    """The archiver process; exits 0 on SIGTERM/SIGINT after draining and flushing."""
    ap = argparse.ArgumentParser(
        prog="python -m mdpipe.history", description="Archive the rings of an instance to Parquet."
    )
    ap.add_argument("--config", help="TOML config file (default: built-in defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    ap.add_argument("--instance", help="instance name (overrides the config)")
    args = ap.parse_args(argv)
    overrides = list(args.set) + ([f"instance={args.instance}"] if args.instance else [])
    try:
        cfg = config_mod.load(args.config, overrides=overrides)
    except config_mod.ConfigError as exc:
        print(f"mdpipe archiver: {exc}", file=sys.stderr)
        return 2
    logs.setup_child(cfg.supervisor.log_format, cfg.supervisor.log_level)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        archiver = Archiver(cfg)
    except WriterAliveError as exc:
        log.error("another archiver runs for instance %s: %s", cfg.instance, exc)
        return 1
    except ValueError as exc:
        log.error("%s", exc)
        return 1
    if cfg.history.core >= 0:
        pin_to_core(cfg.history.core)
    try:
        archiver.run(stop)
    finally:
        archiver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
