"""Opening, creating and validating /dev/shm segments: only our own regular files are trusted.

/dev/shm is world-writable, so a name under it proves nothing. A segment is used only when it
opens without following a link or blocking (O_NOFOLLOW | O_NONBLOCK), is a regular file owned
by the expected user with no group or other write bit, and its header passes every bounds check
against the file's size before anything is allocated or mapped. Anything else is refused with
a LayoutError naming the segment and the field; listings skip it, log it once and count it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import pwd
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mdpipe.shm import layout as L

SHM_DIR = "/dev/shm"
PREFIX = "mdpipe."
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RING_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

log = logging.getLogger("mdpipe.shm")


class LayoutError(RuntimeError):
    """A segment is not one we can trust or read: its name, owner, type, size or a header field."""


class SegmentNotReady(LayoutError):
    """The segment exists but its writer has not finished writing the header (magic is 0)."""


class SegmentMissing(LayoutError, FileNotFoundError):
    """No segment of that name exists."""


def check_names(instance: str, ring: str) -> None:
    """Raise ValueError for an instance or ring name that cannot form a segment name."""
    if not isinstance(instance, str) or not _INSTANCE_RE.match(instance):
        raise ValueError(f"instance name {instance!r}: use 1-64 letters, digits, '_' or '-'")
    if not isinstance(ring, str) or not _RING_RE.match(ring) or len(ring) >= L.NAME_BYTES:
        raise ValueError(f"ring name {ring!r}: use letters, digits, '_', '-' and '.' separators")


def shm_name(instance: str, ring: str) -> str:
    """The POSIX shared-memory name of a ring: /mdpipe.<instance>.<ring>."""
    return f"/{PREFIX}{instance}.{ring}"


def shm_path(instance: str, ring: str) -> str:
    """Where that segment shows in the file system."""
    return f"{SHM_DIR}/{PREFIX}{instance}.{ring}"


def resolve_owner(owner: int | str | None) -> int:
    """The uid whose segments we trust: ours by default, or a user named or numbered."""
    if owner is None:
        return os.geteuid()
    if isinstance(owner, bool) or not isinstance(owner, int | str):
        raise ValueError(f"owner must be a uid or a user name, got {owner!r}")
    if isinstance(owner, int):
        if owner < 0:
            raise ValueError(f"owner uid must be >= 0, got {owner}")
        return owner
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ValueError(f"owner {owner!r} is not a user on this machine") from None


def trust_problem(st: os.stat_result, owner_uid: int) -> str | None:
    """Why a stat result is not one of our segments, or None when it may be."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != owner_uid:
        return f"is owned by uid {st.st_uid}, not uid {owner_uid}"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if st.st_size < L.PAGE:
        return f"is {st.st_size} bytes, smaller than a header page"
    if st.st_size % L.PAGE:
        return f"is {st.st_size} bytes, not a whole number of pages"
    if st.st_size > L.MAX_SEGMENT_BYTES:
        return f"is {st.st_size} bytes, over the {L.MAX_SEGMENT_BYTES}-byte maximum"
    return None


_refused: dict[str, str] = {}
_refused_lock = threading.Lock()


def note_refused(path: str, reason: str) -> None:
    """Remember a refused segment; log each (path, reason) once."""
    with _refused_lock:
        if _refused.get(path) == reason:
            return
        _refused[path] = reason
    log.warning("ignoring %s: %s", path, reason)


def refused_segments() -> dict[str, str]:
    """Every segment refused by this process so far, with the reason (for stats and /metrics)."""
    with _refused_lock:
        return dict(_refused)


def list_segments(
    instance: str | None = None, owner: int | str | None = None
) -> list[tuple[str, str]]:
    """(instance, ring) of every trusted mdpipe segment present, optionally of one instance.

    Entries that are not our regular files are skipped, logged once and counted in
    refused_segments(); lstat never follows a link or opens a FIFO, so this cannot block.
    """
    uid = resolve_owner(owner)
    found = []
    try:
        entries = list(os.scandir(SHM_DIR))
    except FileNotFoundError:
        return []
    for entry in entries:
        name = entry.name
        if not name.startswith(PREFIX):
            continue
        inst, _, ring = name[len(PREFIX) :].partition(".")
        if not ring or (instance is not None and inst != instance):
            continue
        if not _INSTANCE_RE.match(inst) or not _RING_RE.match(ring) or len(ring) >= L.NAME_BYTES:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        problem = trust_problem(st, uid)
        if problem is not None:
            note_refused(entry.path, problem)
            continue
        found.append((inst, ring))
    return sorted(found)


def open_segment(
    instance: str, ring: str, *, writable: bool, owner: int | str | None = None
) -> tuple[mmap.mmap, os.stat_result]:
    """Map an existing trusted segment; returns the mapping and the file's stat.

    Raises SegmentMissing, PermissionError, or LayoutError for anything not ours.
    """
    path = shm_path(instance, ring)
    uid = resolve_owner(owner)
    flags = (os.O_RDWR if writable else os.O_RDONLY) | _OPEN_FLAGS
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SegmentMissing(f"segment {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            note_refused(path, "is a symbolic link")
            raise LayoutError(f"segment {path} is a symbolic link: refused") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise PermissionError(f"no access to {path}") from None
        raise LayoutError(f"segment {path} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        problem = trust_problem(st, uid)
        if problem is not None:
            note_refused(path, problem)
            raise LayoutError(f"segment {path} {problem}: refused")
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        mm = mmap.mmap(fd, st.st_size, access=access)
    finally:
        os.close(fd)
    return mm, st


def process_start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot, or None when it does not exist."""
    if pid <= 0 or pid > 1 << 22:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":  # a zombie has exited; only its parent has not reaped it yet
        return None
    return int(fields[19])


def process_alive(pid: int, start_ticks: int) -> bool:
    """True when pid runs and is the same process that started at start_ticks (no pid reuse)."""
    return pid > 0 and process_start_ticks(pid) == start_ticks


def _ascii(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


class HeaderView:
    """Typed read access to a mapped segment's header page and tables."""

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm = mm
        self.mv = memoryview(mm)
        self.q = self.mv.cast("Q")
        self.u32 = self.mv[: L.PAGE].cast("I")

    def u64(self, offset: int) -> int:
        """An aligned u64 header field."""
        return self.q[offset >> 3]

    def u32_at(self, offset: int) -> int:
        """An aligned u32 header field."""
        return self.u32[offset >> 2]

    def release(self) -> None:
        """Drop every view so the mapping can be closed."""
        self.u32.release()
        self.q.release()
        self.mv.release()

    @property
    def magic(self) -> int:
        return self.u64(L.H_MAGIC)

    @property
    def version(self) -> int:
        return self.u32_at(L.H_VERSION)

    @property
    def kind(self) -> int:
        return self.u32_at(L.H_KIND)

    @property
    def capacity(self) -> int:
        return self.u64(L.H_CAPACITY)

    @property
    def depth(self) -> int:
        return self.u32_at(L.H_DEPTH)

    @property
    def max_symbols(self) -> int:
        return self.u32_at(L.H_MAX_SYMBOLS)

    @property
    def generation(self) -> int:
        return self.u64(L.H_GENERATION)

    @property
    def write_cursor(self) -> int:
        return self.u64(L.H_WRITE_CURSOR)

    @property
    def heartbeat_ns(self) -> int:
        return self.u64(L.H_HEARTBEAT_NS)

    @property
    def writer_pid(self) -> int:
        return self.u64(L.H_WRITER_PID)

    @property
    def writer_alive(self) -> bool:
        return process_alive(self.writer_pid, self.u64(L.H_WRITER_START_TICKS))

    @property
    def exchange(self) -> str:
        return _ascii(self.mm[L.H_EXCHANGE : L.H_EXCHANGE + L.NAME_BYTES])

    @property
    def ring_name(self) -> str:
        return _ascii(self.mm[L.H_RING_NAME : L.H_RING_NAME + L.NAME_BYTES])

    def n_symbols(self) -> int:
        """Entries published in the symbol table, clamped to what the table can hold."""
        return min(self.u32_at(L.H_N_SYMBOLS), self.max_symbols)

    def symbol_entries(self) -> list[tuple[str, str, str, str]]:
        """(name, base, quote, kind) of every published symbol, in symbol-id order."""
        base = self.u64(L.H_SYMBOLS_OFFSET)
        out = []
        for i in range(self.n_symbols()):
            e = base + i * L.SYMBOL_ENTRY
            out.append(
                (
                    _ascii(self.mm[e + L.S_NAME : e + L.S_BASE]),
                    _ascii(self.mm[e + L.S_BASE : e + L.S_QUOTE]),
                    _ascii(self.mm[e + L.S_QUOTE : e + L.S_KIND]),
                    _ascii(self.mm[e + L.S_KIND : e + L.SYMBOL_ENTRY]),
                )
            )
        return out

    def symbols(self) -> list[str]:
        """The symbol table's names, in symbol-id order."""
        return [e[0] for e in self.symbol_entries()]

    def counter_names(self) -> list[str]:
        n = min(self.u32_at(L.H_N_COUNTERS), L.MAX_COUNTERS)
        base = L.COUNTER_NAMES_OFFSET
        return [
            _ascii(self.mm[base + i * L.NAME_BYTES : base + (i + 1) * L.NAME_BYTES])
            for i in range(n)
        ]

    def counters(self) -> dict[str, int]:
        """Every named counter of the writer."""
        base = L.COUNTERS_OFFSET >> 3
        return {name: self.q[base + i] for i, name in enumerate(self.counter_names())}

    def dtype(self) -> np.dtype | None:
        """The record dtype (validate() has checked the header's description equals it)."""
        return L.record_dtype(self.kind, self.depth)

    def validate(self, name: str, expected_kind: int | None = None) -> None:
        """Raise LayoutError naming the field unless every header field is ours and in bounds."""
        size = len(self.mm)
        magic = self.magic
        if magic == 0:
            raise SegmentNotReady(f"segment {name} is still being created by its writer")
        if magic != L.MAGIC:
            raise LayoutError(f"segment {name}: field magic is {magic:#x}, not an mdpipe segment")
        if self.version != L.LAYOUT_VERSION:
            raise LayoutError(
                f"segment {name}: field layout_version is {self.version}, this mdpipe reads "
                f"version {L.LAYOUT_VERSION}: upgrade the reader or the writer so both match"
            )
        kind = self.kind
        if kind not in L.KIND_NAMES:
            raise LayoutError(f"segment {name}: field kind is {kind}, not one of 1..5")
        if expected_kind is not None and kind != expected_kind:
            have, want = L.KIND_NAMES[kind], L.KIND_NAMES[expected_kind]
            raise LayoutError(f"segment {name}: field kind: it holds {have} records, not {want}")
        capacity, depth, max_symbols = self.capacity, self.depth, self.max_symbols
        if kind == L.KIND_STATUS:
            if capacity != 0 or depth != 0:
                raise LayoutError(f"segment {name}: field capacity/depth must be 0 for status")
        else:
            if capacity < 2 or capacity & (capacity - 1) or capacity > L.MAX_CAPACITY:
                raise LayoutError(
                    f"segment {name}: field capacity is {capacity}, not a power of two in "
                    f"2..{L.MAX_CAPACITY}"
                )
            want_depth = (1, L.MAX_DEPTH) if kind == L.KIND_BOOK else (0, 0)
            if not want_depth[0] <= depth <= want_depth[1]:
                raise LayoutError(f"segment {name}: field depth is {depth}, out of bounds")
        if max_symbols > L.MAX_SYMBOLS:
            raise LayoutError(
                f"segment {name}: field max_symbols is {max_symbols}, over {L.MAX_SYMBOLS}"
            )
        if self.u32_at(L.H_N_SYMBOLS) > max_symbols:
            raise LayoutError(f"segment {name}: field n_symbols exceeds max_symbols")
        if self.u32_at(L.H_N_COUNTERS) > L.MAX_COUNTERS:
            raise LayoutError(f"segment {name}: field n_counters exceeds {L.MAX_COUNTERS}")
        geo = L.segment_geometry(kind, capacity, depth, max_symbols)
        for field, offset in (
            ("record_size", L.H_RECORD_SIZE),
            ("slot_size", L.H_SLOT_SIZE),
        ):
            if self.u32_at(offset) != geo[field]:
                raise LayoutError(
                    f"segment {name}: field {field} is {self.u32_at(offset)}, expected {geo[field]}"
                )
        for field, offset in (
            ("symbols_offset", L.H_SYMBOLS_OFFSET),
            ("latest_offset", L.H_LATEST_OFFSET),
            ("slots_offset", L.H_SLOTS_OFFSET),
            ("segment_size", L.H_SEGMENT_SIZE),
        ):
            if self.u64(offset) != geo[field]:
                raise LayoutError(
                    f"segment {name}: field {field} is {self.u64(offset)}, expected {geo[field]}"
                )
        if geo["segment_size"] != size:
            raise LayoutError(
                f"segment {name}: field segment_size is {geo['segment_size']} but the file is {size} bytes"
            )
        raw = bytes(self.mm[L.H_DTYPE_DESCR : L.H_DTYPE_DESCR + L.DTYPE_DESCR_BYTES]).rstrip(b"\0")
        if raw != L.describe_dtype(L.record_dtype(kind, depth)):
            raise LayoutError(
                f"segment {name}: field dtype_descr differs from this mdpipe's record layout"
            )


@dataclass
class SegmentStatus:
    """A snapshot of one segment's header, for `mdpipe stats` and /metrics."""

    instance: str
    ring: str
    kind: str
    exchange: str
    writer_pid: int
    writer_alive: bool
    generation: int
    start_time_ns: int
    capacity: int
    depth: int
    write_cursor: int
    heartbeat_ns: int
    symbols: list[str]
    counters: dict[str, int]


def read_status(instance: str, ring: str, owner: int | str | None = None) -> SegmentStatus:
    """Read one trusted segment's header without keeping it mapped."""
    mm, _ = open_segment(instance, ring, writable=False, owner=owner)
    h = HeaderView(mm)
    try:
        h.validate(shm_path(instance, ring))
        return SegmentStatus(
            instance=instance,
            ring=ring,
            kind=L.KIND_NAMES[h.kind],
            exchange=h.exchange,
            writer_pid=h.writer_pid,
            writer_alive=h.writer_alive,
            generation=h.generation,
            start_time_ns=h.u64(L.H_START_TIME_NS),
            capacity=h.capacity,
            depth=h.depth,
            write_cursor=h.write_cursor,
            heartbeat_ns=h.heartbeat_ns,
            symbols=h.symbols(),
            counters=h.counters(),
        )
    finally:
        h.release()
        mm.close()


def iter_status(instance: str, owner: int | str | None = None) -> Iterator[SegmentStatus]:
    """Status of every trusted, valid segment of an instance; the others are skipped and noted."""
    for inst, ring in list_segments(instance, owner):
        try:
            yield read_status(inst, ring, owner)
        except SegmentMissing:
            continue
        except (LayoutError, PermissionError) as exc:
            note_refused(shm_path(inst, ring), str(exc))
            continue


def unlink_segment(instance: str, ring: str) -> None:
    """Remove a segment of ours (a missing one is fine)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(shm_path(instance, ring))


def unlink_instance(instance: str) -> list[str]:
    """Remove every segment of an instance whose writer is not alive; returns the rings removed."""
    removed = []
    for inst, ring in list_segments(instance):
        try:
            mm, _ = open_segment(inst, ring, writable=False)
        except SegmentMissing:
            continue
        except LayoutError:
            unlink_segment(inst, ring)  # ours (list_segments checked the owner) but unusable
            removed.append(ring)
            continue
        h = HeaderView(mm)
        alive = h.magic == L.MAGIC and h.writer_alive
        h.release()
        mm.close()
        if not alive:
            unlink_segment(inst, ring)
            removed.append(ring)
    return removed
