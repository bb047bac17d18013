"""`python -m mdpipe.history`: run the archiver of an instance until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from mdpipe import child
from mdpipe.affinity import pin_to_core
from mdpipe.history.archiver import Archiver
from mdpipe.shm.writer import WriterAliveError

log = logging.getLogger("mdpipe.archiver")


def main(argv: Sequence[str] | None = None) -> int:
    """The archiver process; exits 0 on SIGTERM/SIGINT after draining and flushing."""
    args = child.parser("python -m mdpipe.history", "Archive the rings of an instance to Parquet.")
    cfg = child.load_config(args.parse_args(argv), "archiver")
    if cfg is None:
        return 2
    stop = child.stop_on_signals()
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
