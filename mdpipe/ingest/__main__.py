"""`python -m mdpipe.ingest --config FILE --feed NAME --shard I`: one pinned ingest process."""

from __future__ import annotations

import logging
import sys

from mdpipe import child
from mdpipe.affinity import pin_to_core
from mdpipe.ingest.shard import run_shard
from mdpipe.shm.writer import WriterAliveError


def main(argv: list[str] | None = None) -> int:
    """Load the config, pin to the shard's core, run until SIGTERM/SIGINT; returns the exit code."""
    p = child.parser(
        "python -m mdpipe.ingest",
        "Run one ingest shard: exchange WebSocket feeds into shared-memory rings.",
    )
    p.add_argument("--feed", required=True, help="the [[feeds]] entry's name")
    p.add_argument("--shard", required=True, type=int, help="the shard index within the feed")
    args = p.parse_args(argv)
    # The supervisor already holds the HTTP port: do not refuse the config for it.
    cfg = child.load_config(args, "ingest", check_ports=False)
    if cfg is None:
        return 2
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

    stop = child.stop_on_signals(log)
    pin_to_core(core)  # last: every import is done
    try:
        run_shard(cfg, feed, args.shard, core, symbols, stop)
    except WriterAliveError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
