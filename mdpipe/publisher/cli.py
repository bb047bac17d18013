"""`python -m mdpipe.publisher`: run the publisher of an instance until SIGTERM/SIGINT."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence

from mdpipe import child
from mdpipe.publisher.loop import run_publisher
from mdpipe.shm.writer import WriterAliveError

log = logging.getLogger("mdpipe.publisher")


def main(argv: Sequence[str] | None = None) -> int:
    """The `python -m mdpipe.publisher` entry point; exits 0 on SIGTERM/SIGINT."""
    args = child.parser("python -m mdpipe.publisher", "Tail the rings of an instance into Redis.")
    cfg = child.load_config(args.parse_args(argv), "publisher")
    if cfg is None:
        return 2
    if not cfg.publisher.enabled:
        log.info("publisher.enabled is false: nothing to do")
        return 0
    stop = child.stop_on_signals()
    gc.freeze()  # what exists now lives forever: keep the collector from walking it
    try:
        final = run_publisher(cfg, stop)
    except WriterAliveError as exc:
        log.error("another publisher runs for instance %s: %s", cfg.instance, exc)
        return 1
    log.info("stopped: %s", ", ".join(f"{k}={v}" for k, v in final.items() if v))
    return 0
