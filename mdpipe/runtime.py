"""The per-user runtime directory for lock files, and opening files in it without trusting names.

Lock and pid state never lives in a world-writable directory: another local user could
pre-create, replace or symlink it there. It lives in a directory only we can write:
MDPIPE_RUNTIME_DIR if set, else $XDG_RUNTIME_DIR/mdpipe (when that directory is ours), else
/run/mdpipe for root, else /tmp/mdpipe-<uid>. Whichever it is, it must be a real directory
(not a symlink) owned by our effective uid with no group or other access, or we refuse.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path


class RuntimeStateError(RuntimeError):
    """A runtime directory or file is not ours (owner, mode or type): refuse to use it."""


def _describe(st: os.stat_result) -> str:
    kind = (
        "a symlink"
        if stat.S_ISLNK(st.st_mode)
        else "a directory"
        if stat.S_ISDIR(st.st_mode)
        else "a FIFO"
        if stat.S_ISFIFO(st.st_mode)
        else "a regular file"
        if stat.S_ISREG(st.st_mode)
        else "a special file"
    )
    return f"{kind} owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}"


def check_private_dir(path: Path) -> None:
    """Raise RuntimeStateError unless path is a directory (not a link) of ours, mode 0700."""
    st = os.lstat(path)
    me = os.geteuid()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != me or st.st_mode & 0o077:
        raise RuntimeStateError(
            f"runtime directory {path} is {_describe(st)}; it must be a directory owned by "
            f"uid {me} with mode 0700 (another user may have planted it): remove it or set "
            "MDPIPE_RUNTIME_DIR to a private directory"
        )


def ensure_private_dir(path: Path) -> Path:
    """Create path with mode 0700 if missing, then check that it is ours and private."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    check_private_dir(path)
    return path


def _xdg_dir() -> Path | None:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if not xdg or not os.path.isabs(xdg):
        return None
    try:
        check_private_dir(Path(xdg))
    except (OSError, RuntimeStateError):
        return None  # not ours (su, sudo, a stale variable): fall back
    return Path(xdg) / "mdpipe"


def runtime_dir() -> Path:
    """This user's private mdpipe runtime directory, created on first use."""
    given = os.environ.get("MDPIPE_RUNTIME_DIR")
    if given:
        return ensure_private_dir(Path(given))
    xdg = _xdg_dir()
    if xdg is not None:
        return ensure_private_dir(xdg)
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return ensure_private_dir(Path("/run/mdpipe"))
    return ensure_private_dir(Path(f"/tmp/mdpipe-{os.geteuid()}"))


def check_own_file(path: Path, fd: int) -> os.stat_result:
    """fstat an opened file; RuntimeStateError unless it is a regular file owned by us."""
    st = os.fstat(fd)
    me = os.geteuid()
    if not stat.S_ISREG(st.st_mode) or st.st_uid != me:
        raise RuntimeStateError(
            f"{path} is {_describe(st)}, not a regular file owned by uid {me}: "
            "refusing to use it; remove it if it is not an mdpipe file of yours"
        )
    return st


def open_own_file(path: Path, *, create: bool) -> int:
    """Open (or create, mode 0600) a runtime file read-write, never following a symlink.

    Raises RuntimeStateError for a symlink, a non-regular file, or a file of another user;
    FileNotFoundError when it is missing and create is False.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = -1
    if create:
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if fd < 0:
            fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a FIFO without a writer
            st = os.lstat(path)
            raise RuntimeStateError(
                f"{path} is {_describe(st)}: refusing to follow or open it; remove it"
            ) from None
        raise
    try:
        check_own_file(path, fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_own_file_readonly(path: Path) -> int:
    """Open a runtime file read-only without following links; RuntimeStateError if not ours."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RuntimeStateError(f"{path} is a symlink: refusing to follow it") from None
        raise
    try:
        check_own_file(path, fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_own_segment(instance: str, ring: str, shm_dir: str = "/dev/shm") -> bool:
    """The segment is our own regular file: worth opening at all (lstat only, never opens)."""
    try:
        st = os.lstat(f"{shm_dir}/mdpipe.{instance}.{ring}")
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
