"""The tape file every venue's replay reads: `<receive ns> <raw frame>` lines, gzip or plain."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path


class TapeError(ValueError):
    """The tape file cannot be replayed; the message says why."""


def read_tape_lines(path: Path, frame: str) -> Iterator[tuple[int, int, bytes]]:
    """(line number, receive ns, raw frame) of each non-blank line; `frame` names what a line
    holds after the stamp, for the error on a malformed line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TapeError(f"cannot read tape {path}: {exc}") from exc
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.rstrip(b"\r")
        if not line:
            continue
        stamp, _, raw = line.partition(b" ")
        if not stamp.isdigit() or not raw:
            raise TapeError(f"{path}:{number}: expected '<ns> <{frame}>'")
        yield number, int(stamp), raw
