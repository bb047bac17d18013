"""Raw frames into rotating gzip tapes, the `<receive ns> <raw frame>` lines `mdpipe sim --tape`
replays, written on a thread of their own so the ingest never waits for a disk.

    <dir>/<venue>/<feed>/<YYYY-MM-DD>/<feed>-<shard>-<HHMMSS>.gz

The ingest hands each frame over with `frame()`: an append to a bounded deque (no lock, no
system call); when the writer has fallen `queue` frames behind, frames are dropped and
counted rather than waited for. Every `flush_interval` seconds the writer compresses what
arrived into one gzip member, appends it to the open file (`.gz.part`) and fsyncs it, so a
crash loses at most that last second; a file is renamed to `.gz` only once complete (a new
UTC day, `rotate_mb`, or close), so a finished file is never corrupt. A `.part` left by a
crash is cut back to its last whole member and finished by the next recorder of the shard.
A write that fails (a full disk) is logged, counted, and its frames are dropped; recording
goes on as soon as space frees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from mdpipe.counters import RECORDER

log = logging.getLogger("mdpipe.record")

COUNTERS = RECORDER.names
(
    FRAMES_RECORDED,
    BYTES_WRITTEN,
    FILES_FINISHED,
    FRAMES_DROPPED,
    WRITE_ERRORS,
    FILES_EXPIRED,
    G_QUEUE,
) = range(len(COUNTERS))


_EPOCH = date(1970, 1, 1)


def day_of(ts_ns: int) -> str:
    """The UTC day of a nanosecond timestamp, YYYY-MM-DD (integer arithmetic: exact at midnight)."""
    return (_EPOCH + timedelta(days=ts_ns // 86_400_000_000_000)).isoformat()


def _gzip_member(data: bytes, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    return c.compress(data) + c.flush()


def whole_members(data: bytes) -> int:
    """Bytes of data made of complete gzip members (what survives of a torn last one)."""
    pos = 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        try:
            d.decompress(data[pos:])
        except zlib.error:
            break
        if not d.eof:
            break
        pos = len(data) - len(d.unused_data)
    return pos


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finish_part(part: Path) -> Path | None:
    """Cut a crashed recorder's `.gz.part` to its whole members and rename it to `.gz`."""
    data = part.read_bytes()
    keep = whole_members(data)
    final = part.with_name(part.name[: -len(".part")])
    if keep == 0:
        part.unlink()
        return None
    if keep < len(data):
        with open(part, "r+b") as fh:
            fh.truncate(keep)
            os.fsync(fh.fileno())
    os.replace(part, final)
    _fsync_dir(part.parent)
    return final


def expire_tapes(root: Path, keep_days: int, today: date | None = None) -> list[Path]:
    """Delete day directories older than keep_days (0 keeps everything)."""
    if keep_days <= 0:
        return []
    today = today or datetime.now(UTC).date()
    removed = []
    for day_dir in root.glob("*/*/*"):
        try:
            day = date.fromisoformat(day_dir.name)
        except ValueError:
            continue
        if (today - day).days >= keep_days:
            shutil.rmtree(day_dir, ignore_errors=True)
            removed.append(day_dir)
    return removed


class TapeRecorder:
    """One ingest shard's raw frames into tapes; `frame()` from the ingest loop, never blocking."""

    def __init__(
        self,
        root: Path,
        venue: str,
        feed: str,
        shard: int,
        counters: list[int] | None = None,
        *,
        queue: int = 100_000,
        flush_interval: float = 1.0,
        rotate_bytes: int = 256 << 20,
        level: int = 3,
        keep_days: int = 0,
        clock: Callable[[], int] = time.time_ns,
        on_flush: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.base = root / venue / feed
        self.root, self.feed, self.shard = root, feed, shard
        self.c = counters if counters is not None else [0] * len(COUNTERS)
        self.max_queue = queue
        self.flush_interval = flush_interval
        self.rotate_bytes = rotate_bytes
        self.level = level
        self.keep_days = keep_days
        self.clock = clock
        self.on_flush, self.on_close = on_flush, on_close
        self.q: deque[tuple[int, bytes]] = deque()
        self.path: Path | None = None  # the open .part file
        self.fh = None
        self.day = ""
        self.size = 0
        self.failing = False
        self._stop = threading.Event()
        self._recover()
        self.thread = threading.Thread(target=self._run, name="tape-recorder", daemon=True)
        self.thread.start()

    # ----- the ingest side ------------------------------------------------------------------

    def frame(self, raw: bytes, recv_ns: int) -> None:
        """Hand one raw frame (or REST body) over; dropped and counted when the writer lags."""
        if len(self.q) >= self.max_queue:
            self.c[FRAMES_DROPPED] += 1
            return
        self.q.append((recv_ns, raw))

    def close(self) -> None:
        """Write what is queued, finish the open file, stop the thread."""
        self._stop.set()
        self.thread.join()
        if self.on_close is not None:
            self.on_close()

    # ----- the writer thread ----------------------------------------------------------------

    def _recover(self) -> None:
        prefix = f"{self.feed}-{self.shard}-"
        for part in sorted(self.base.glob(f"*/{prefix}*.gz.part")):
            with contextlib.suppress(OSError):
                done = finish_part(part)
                log.info("finished %s left by a crashed recorder (%s)", part, done or "empty")

    def _run(self) -> None:
        next_expire = 0.0
        while not self._stop.wait(self.flush_interval):
            self._write_pending()
            if self.on_flush is not None:
                self.on_flush()
            if time.monotonic() >= next_expire:
                next_expire = time.monotonic() + 3600
                self.c[FILES_EXPIRED] += len(expire_tapes(self.root, self.keep_days))
        self._write_pending()
        self._finish()

    def _write_pending(self) -> None:
        """One gzip member per UTC day among the queued frames, appended and fsynced."""
        q = self.q
        n = len(q)
        self.c[G_QUEUE] = n
        if not n:
            return
        by_day: dict[str, list[bytes]] = {}
        for _ in range(n):
            ns, raw = q.popleft()
            day = day_of(ns)
            lines = by_day.setdefault(day, [])
            lines.append(b"%d " % ns)
            lines.append(raw.rstrip(b"\n").replace(b"\n", b" "))
            lines.append(b"\n")
        for day, lines in by_day.items():
            count = len(lines) // 3
            try:
                self._append(day, _gzip_member(b"".join(lines), self.level))
            except OSError as exc:
                self.c[WRITE_ERRORS] += 1
                self.c[FRAMES_DROPPED] += count
                if not self.failing:
                    log.error(
                        "recording %s.%d: %s; frames are dropped (counted) until it succeeds",
                        self.feed,
                        self.shard,
                        exc,
                    )
                self.failing = True
                self._abandon()
                continue
            if self.failing:
                log.info("recording %s.%d works again", self.feed, self.shard)
                self.failing = False
            self.c[FRAMES_RECORDED] += count

    def _append(self, day: str, member: bytes) -> None:
        if self.fh is not None and (day != self.day or self.size >= self.rotate_bytes):
            self._finish()
        if self.fh is None:
            stamp = datetime.fromtimestamp(self.clock() / 1e9, UTC).strftime("%H%M%S")
            d = self.base / day
            d.mkdir(parents=True, exist_ok=True)
            name = f"{self.feed}-{self.shard}-{stamp}.gz"
            n = 1
            while (d / name).exists() or (d / (name + ".part")).exists():
                n += 1
                name = f"{self.feed}-{self.shard}-{stamp}-{n}.gz"
            self.path = d / (name + ".part")
            self.fh = open(self.path, "ab")  # noqa: SIM115 - kept open across calls
            self.day, self.size = day, 0
        start = self.fh.tell()
        try:
            self.fh.write(member)
            self.fh.flush()
            os.fsync(self.fh.fileno())
        except OSError:
            with contextlib.suppress(OSError):  # never leave half a member behind
                self.fh.truncate(start)
            raise
        self.size += len(member)
        self.c[BYTES_WRITTEN] += len(member)

    def _finish(self) -> None:
        if self.fh is None:
            return
        try:
            self.fh.close()
            if self.size:
                os.replace(self.path, self.path.with_name(self.path.name[: -len(".part")]))
                _fsync_dir(self.path.parent)
                self.c[FILES_FINISHED] += 1
            else:
                self.path.unlink()
        except OSError as exc:
            self.c[WRITE_ERRORS] += 1
            log.error("finishing tape %s: %s", self.path, exc)
        self.fh = self.path = None

    def _abandon(self) -> None:
        """After a failed write: close the file (its whole members stay) to reopen a new one."""
        with contextlib.suppress(OSError):
            if self.fh is not None:
                self.fh.close()
        if self.path is not None and self.size:
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_name(self.path.name[: -len(".part")]))
        elif self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.fh = self.path = None


def open_recorder(cfg: Any, exchange: str, feed: str, shard: int) -> TapeRecorder | None:
    """The ingest shard's recorder when [record] enabled, its counters in the status segment
    `recorder.<feed>.<shard>` (for `mdpipe stats` and /metrics); None otherwise."""
    rec = cfg.record
    if not rec.enabled:
        return None
    from mdpipe import config as config_mod
    from mdpipe.shm.status import StatusWriter

    status = StatusWriter.create(
        cfg.instance,
        f"recorder.{feed}.{shard}",
        counters=COUNTERS,
        mode=config_mod.segment_mode(cfg),
        group=cfg.shm.group,
    )
    recorder = TapeRecorder(
        Path(rec.dir),
        exchange,
        feed,
        shard,
        status.counters,
        queue=rec.queue,
        flush_interval=rec.flush_interval,
        rotate_bytes=rec.rotate_mb << 20,
        level=rec.level,
        keep_days=rec.keep_days,
        on_flush=status.heartbeat,
        on_close=status.close,
    )
    return recorder
