"""Who a process is, from /proc: owner, command line, environment marker, flock holder.

`mdpipe stop` and `mdpipe start` signal a process only after checking it is the one they
mean: same start time (no pid reuse), same owner, and (for the supervisor) the holder of
the instance's lock per /proc/locks, or (for a child) an mdpipe command line with the
marker its supervisor put in its environment. A pid read from a file is a claim, never a proof.
"""

from __future__ import annotations

import contextlib
import os
import signal

from mdpipe.shm.segment import process_start_ticks

CHILD_MARKER = "MDPIPE_CHILD_OF"  # "<instance>" in the environment of every supervised child


def process_uid(pid: int) -> int | None:
    """The real uid of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def process_cmdline(pid: int) -> list[str]:
    """A process's argv ([] when it is gone or hidden)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(1 << 16)
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_environ(pid: int, name: str) -> str | None:
    """One variable of a process's initial environment (readable only for our own processes)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read(1 << 20)
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def flock_holders(dev: int, ino: int) -> set[int]:
    """Pids holding a WRITE flock on the file (dev, ino), from /proc/locks."""
    want = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    holders = set()
    try:
        with open("/proc/locks") as f:
            lines = f.readlines()
    except OSError:
        return holders
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 6265 fe:00:2149385 0 EOF" ("->" marks blocked waiters)
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[3] == "WRITE":
            with contextlib.suppress(ValueError):
                if _same_file(parts[5], want):
                    holders.add(int(parts[4]))
    return holders


def _same_file(field: str, want: str) -> bool:
    """Compare 'maj:min:ino' fields whose hex widths may differ."""
    try:
        a = [int(x, 16) for x in field.split(":")[:2]] + [int(field.split(":")[2])]
        b = [int(x, 16) for x in want.split(":")[:2]] + [int(want.split(":")[2])]
    except (ValueError, IndexError):
        return False
    return a == b


def is_ours(pid: int, ticks: int) -> bool:
    """pid runs, is the process that started at `ticks`, and belongs to our uid."""
    if pid <= 1 or process_start_ticks(pid) != ticks:
        return False
    return process_uid(pid) == os.geteuid()


def is_supervised_child(pid: int, ticks: int, instance: str) -> bool:
    """pid is an mdpipe process of ours that a supervisor of `instance` started."""
    if not is_ours(pid, ticks) or process_environ(pid, CHILD_MARKER) != instance:
        return False
    return any("mdpipe" in arg for arg in process_cmdline(pid)[:4])


def signal_verified(pid: int, ticks: int, sig: int, *, group: bool = False) -> bool:
    """Send sig to pid (or its process group) only if it is still the process that started
    at `ticks`; a pidfd pins the process between the check and the signal. True if sent."""
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        if process_start_ticks(pid) != ticks:
            return False  # the pid was reused after our check
        if group:
            if os.getpgid(pid) != pid:
                return False  # it no longer leads the group we mean
            os.killpg(pid, sig)
        else:
            signal.pidfd_send_signal(pidfd, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        os.close(pidfd)
