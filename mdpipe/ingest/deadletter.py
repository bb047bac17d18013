"""The dead-letter file: bad exchange frames kept verbatim, one JSON line each, size-bounded."""

from __future__ import annotations

import base64
import errno
import os
import stat
import time
from pathlib import Path

import orjson

ROTATE_BYTES = 64 << 20


class UnsafePathError(OSError):
    """The dead-letter directory or file is a link, not ours, or writable by others."""


def _open_dir(path: Path) -> int:
    """Open the directory without following a link at its last component; verify it is ours."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(
                exc.errno, "a symlink or not a directory: refused", str(path)
            ) from None
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
        os.close(fd)
        raise UnsafePathError(
            errno.EPERM,
            f"owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: "
            "it must be ours and not writable by others",
            str(path),
        )
    return fd


class DeadLetter:
    """Appends `{"ts", "kind", "error", "raw"}` lines; rotates to `<file>.1` past max_bytes.

    A frame that is not UTF-8 text has its bytes in "raw_b64" too ("raw" shows them escaped).
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = ROTATE_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.written = 0
        self._f = None
        self._dir_fd = -1

    def _open(self) -> None:
        """Open the file for appending, never through a link, and only if it is our own."""
        if self._dir_fd < 0:
            self._dir_fd = _open_dir(self.path.parent)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(self.path.name, flags | os.O_CLOEXEC, 0o600, dir_fd=self._dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                raise UnsafePathError(
                    exc.errno, "a symlink or FIFO: refused", str(self.path)
                ) from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            os.close(fd)
            raise UnsafePathError(errno.EPERM, "not a regular file of ours", str(self.path))
        self._f = os.fdopen(fd, "ab")
        self._size = st.st_size

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
        name = self.path.name
        os.replace(name, name + ".1", src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self._open()

    def close(self) -> None:
        """Close the file (it is reopened on the next write)."""
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
