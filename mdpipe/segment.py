"""Mapping /dev/shm segments and reading their headers; shared by the writer, readers and stats."""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import posix_ipc

from mdpipe import layout as L

SHM_DIR = "/dev/shm"
PREFIX = "mdpipe."
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RING_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class LayoutError(RuntimeError):
    """A segment is not what the reader expects: wrong magic, version or record kind."""


class SegmentNotReady(LayoutError):
    """The segment exists but its writer has not finished writing the header (magic is 0)."""


def check_names(instance: str, ring: str) -> None:
    """Raise ValueError for an instance or ring name that cannot form a segment name."""
    if not _INSTANCE_RE.match(instance):
        raise ValueError(f"instance name {instance!r}: use letters, digits, '_' or '-'")
    if not _RING_RE.match(ring) or len(ring) >= L.NAME_BYTES:
        raise ValueError(f"ring name {ring!r}: use letters, digits, '_', '-' and '.' separators")


def shm_name(instance: str, ring: str) -> str:
    """The POSIX shared-memory name of a ring: /mdpipe.<instance>.<ring>."""
    return f"/{PREFIX}{instance}.{ring}"


def shm_path(instance: str, ring: str) -> str:
    """Where that segment shows in the file system."""
    return f"{SHM_DIR}/{PREFIX}{instance}.{ring}"


def list_segments(instance: str | None = None) -> list[tuple[str, str]]:
    """(instance, ring) of every mdpipe segment present, optionally of one instance."""
    found = []
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.startswith(PREFIX):
            continue
        inst, _, ring = entry[len(PREFIX) :].partition(".")
        if ring and (instance is None or inst == instance):
            found.append((inst, ring))
    return sorted(found)


def process_start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":  # a zombie has exited; only its parent has not reaped it yet
        return None
    return int(fields[19])


def process_alive(pid: int, start_ticks: int) -> bool:
    """True when pid runs and is the same process that started at start_ticks (no pid reuse)."""
    return pid > 0 and process_start_ticks(pid) == start_ticks


def map_segment(name: str, *, writable: bool) -> tuple[mmap.mmap, int]:
    """Map an existing segment; returns the mapping and the segment's inode.

    The size passed to posix_ipc must be 0: a non-zero size would truncate it.
    """
    flags = 0
    shm = posix_ipc.SharedMemory(name, flags, read_only=not writable)
    try:
        st = os.fstat(shm.fd)
        if st.st_size < L.PAGE:
            raise LayoutError(f"segment {name} is {st.st_size} bytes: not an mdpipe segment")
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        mm = mmap.mmap(shm.fd, st.st_size, access=access)
    finally:
        shm.close_fd()
    return mm, st.st_ino


def _ascii(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


class HeaderView:
    """Typed access to a mapped segment's header page and tables (read side)."""

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

    def symbols(self) -> list[str]:
        """The symbol table, in symbol-id order."""
        n = self.u32_at(L.H_N_SYMBOLS)
        base = self.u64(L.H_SYMBOLS_OFFSET)
        return [
            _ascii(self.mm[base + i * L.SYMBOL_ENTRY : base + (i + 1) * L.SYMBOL_ENTRY])
            for i in range(n)
        ]

    def counter_names(self) -> list[str]:
        n = self.u32_at(L.H_N_COUNTERS)
        base = L.H_COUNTER_NAMES
        return [
            _ascii(self.mm[base + i * L.NAME_BYTES : base + (i + 1) * L.NAME_BYTES])
            for i in range(n)
        ]

    def counters(self) -> dict[str, int]:
        """Every named counter of the writer."""
        base = L.H_COUNTERS >> 3
        return {name: self.q[base + i] for i, name in enumerate(self.counter_names())}

    def dtype(self) -> np.dtype | None:
        """The record dtype as the header describes it (None for a status segment)."""
        raw = self.mm[L.H_DTYPE_DESCR : L.H_DTYPE_DESCR + L.DTYPE_DESCR_BYTES].rstrip(b"\0")
        desc = json.loads(raw or b"{}")
        if not desc:
            return None
        fields = desc["fields"]
        return np.dtype(
            {
                "names": [f["name"] for f in fields],
                "formats": [
                    (f["type"], tuple(f["shape"])) if f["shape"] else f["type"] for f in fields
                ],
                "offsets": [f["offset"] for f in fields],
                "itemsize": desc["itemsize"],
            }
        )

    def validate(self, name: str, expected_kind: int | None = None) -> None:
        """Raise LayoutError unless this is an mdpipe segment of our layout version (and kind)."""
        magic = self.magic
        if magic == 0:
            raise SegmentNotReady(f"segment {name} is still being created by its writer")
        if magic != L.MAGIC:
            raise LayoutError(f"segment {name} is not an mdpipe segment (bad magic)")
        if self.version != L.LAYOUT_VERSION:
            raise LayoutError(
                f"segment {name} has layout version {self.version}, this mdpipe reads version "
                f"{L.LAYOUT_VERSION}: upgrade the reader or the writer so both match"
            )
        if expected_kind is not None and self.kind != expected_kind:
            have = L.KIND_NAMES.get(self.kind, str(self.kind))
            want = L.KIND_NAMES.get(expected_kind, str(expected_kind))
            raise LayoutError(f"segment {name} holds {have} records, not {want} records")
        expected = L.record_dtype(self.kind, self.depth)
        if expected != self.dtype():
            raise LayoutError(f"segment {name}: record layout differs from this mdpipe's")


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


def read_status(instance: str, ring: str) -> SegmentStatus:
    """Read one segment's header without keeping it mapped."""
    name = shm_name(instance, ring)
    mm, _ = map_segment(name, writable=False)
    h = HeaderView(mm)
    try:
        h.validate(name)
        return SegmentStatus(
            instance=instance,
            ring=ring,
            kind=L.KIND_NAMES.get(h.kind, "unknown"),
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


def iter_status(instance: str) -> Iterator[SegmentStatus]:
    """Status of every readable segment of an instance; unreadable ones are skipped."""
    for inst, ring in list_segments(instance):
        try:
            yield read_status(inst, ring)
        except (posix_ipc.ExistentialError, LayoutError, PermissionError):
            continue
