"""Recorded exchange tapes: where they live and how to read them.

A tape is gzip text, one message per line: `<local receive time, ns> <raw JSON>`. Lines are
combined-stream envelopes, except the REST depth snapshot the recorder fetched, stored at the
moment it arrived. Tests, the replay simulator and the benches all read tapes through here.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

TAPES_DIR_ENV = "MDPIPE_TAPES_DIR"
FUTURES_TAPE = "usdm_btcusdt_20240808.gz"
SPOT_TAPE = "spot_btcusdt_20240808.gz"

_REPO_ROOT = Path(__file__).resolve().parents[2]


def tapes_dir() -> Path:
    """The tape directory: $MDPIPE_TAPES_DIR, else the repository's `data/tapes`."""
    configured = os.environ.get(TAPES_DIR_ENV)
    return Path(configured) if configured else _REPO_ROOT / "data" / "tapes"


def tape_path(name: str) -> Path:
    """The path of a named tape; FileNotFoundError says where it looked and how to point."""
    path = tapes_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"tape {path} not found (set {TAPES_DIR_ENV} to its directory)")
    return path


def read_tape(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """Yield (local receive ns, raw JSON bytes) for each line of a tape, in order."""
    with gzip.open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            stamp, sep, raw = line.rstrip(b"\r\n").partition(b" ")
            if not sep or not stamp.isdigit() or not raw:
                raise ValueError(f"{path}:{number}: expected '<ns> <json>', got {line[:80]!r}")
            yield int(stamp), raw


def load_tape(path: str | os.PathLike[str]) -> list[tuple[int, bytes]]:
    """The whole tape in memory, for replays and benchmarks."""
    return list(read_tape(path))


def is_snapshot(raw: bytes) -> bool:
    """True for the recorder's REST depth-snapshot line (not a stream envelope)."""
    return raw.startswith(b"{") and b'"lastUpdateId"' in raw[:40] and b'"stream"' not in raw[:40]
