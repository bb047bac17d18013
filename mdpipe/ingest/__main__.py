"""`python -m mdpipe.ingest --config FILE --feed NAME --shard I`: one pinned ingest process."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from mdpipe import config, logs
from mdpipe.affinity import pin_to_core
from mdpipe.ingest.shard import run_shard
from mdpipe.shm.writer import WriterAliveError


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mdpipe.ingest",
        description="Run one ingest shard: exchange WebSocket feeds into shared-memory rings.",
    )
    p.add_argument("--config", help="TOML config file (default: built-in defaults)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    p.add_argument("--instance", help="instance name (overrides the config's)")
    p.add_argument("--feed", required=True, help="the [[feeds]] entry's name")
    p.add_argument("--shard", required=True, type=int, help="the shard index within the feed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Load the config, pin to the shard's core, run until SIGTERM/SIGINT; returns the exit code."""
    args = _parse_args(argv)
    overrides = list(args.set)
    if args.instance:
        overrides.append(f"instance={args.instance}")
    try:
        # The supervisor already holds the HTTP port: do not refuse the config for it.
        cfg = config.load(args.config, overrides=overrides, check_ports=False)
    except config.ConfigError as exc:
        print(f"mdpipe ingest: {exc}", file=sys.stderr)
        return 2
    # The supervisor's choice (environment) wins over the config file's.
    logs.setup_child(cfg.supervisor.log_format, cfg.supervisor.log_level)
    log = logging.getLogger(f"mdpipe.ingest.{args.feed}.{args.shard}")
    shards = {(f.name, i): (f, core, syms) for f, i, core, syms in cfg.ingest_shards()}
    found = shards.get((args.feed, args.shard))
    if found is None:
        have = ", ".join(f"{name}/{i}" for name, i in sorted(shards))
        print(
            f"mdpipe ingest: no shard {args.feed}/{args.shard} in the config (have: {have})",
            file=sys.stderr,
        )
        return 2
    feed, core, symbols = found

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pin_to_core(core)  # last: every import is done
    try:
        run_shard(cfg, feed, args.shard, core, symbols, stop)
    except WriterAliveError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
