"""The dead-letter file: bad exchange frames kept verbatim, one JSON line each, size-bounded."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import orjson

ROTATE_BYTES = 64 << 20


class DeadLetter:
    """Appends `{"ts", "kind", "error", "raw"}` lines; rotates to `<file>.1` past max_bytes.

    A frame that is not UTF-8 text has its bytes in "raw_b64" too ("raw" shows them escaped).
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = ROTATE_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.written = 0
        self._f = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")  # noqa: SIM115 - kept open for the process's life
        self._size = self._f.tell()

    def write(self, kind: str, error: str, raw: bytes | str) -> None:
        """Keep one bad frame; flushed at once so nothing is lost if the process dies."""
        if self._f is None:
            self._open()
        entry = {"ts": time.time_ns(), "kind": kind, "error": error}
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                entry["raw_b64"] = base64.b64encode(raw).decode()
                raw = raw.decode("utf-8", "backslashreplace")
        entry["raw"] = raw
        line = orjson.dumps(entry)
        if self._size + len(line) + 1 > self.max_bytes and self._size:
            self._rotate()
        self._f.write(line + b"\n")
        self._f.flush()
        self._size += len(line) + 1
        self.written += 1

    def _rotate(self) -> None:
        self._f.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._open()

    def close(self) -> None:
        """Close the file (it is reopened on the next write)."""
        if self._f is not None:
            self._f.close()
            self._f = None
