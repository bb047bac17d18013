"""The archiver: tails every books, trades, tickers and candles ring of an instance into Parquet.

Each ring is read through mdpipe.tailer.RingTailer (exact loss counting when lapped). Records
wait in memory until the next flush (every history.flush_interval seconds, or sooner when
many are buffered), which writes one file per kind, venue, symbol and UTC day and commits the
files together with every ring's cursor (mdpipe.history.store.Journal): after a kill -9 the
archiver resumes at the committed cursors, so each record reaches exactly one finalized file.
Every trade, ticker and candle record is kept (a candle amended by a late trade once per
revision, as the ring carried it); books at history.book_depth levels, every record or, with
history.book_interval_ms = N, the first record of each N ms of exchange time per symbol.
On SIGTERM it waits for the ingest to stop (the supervisor stops it first), drains the rings
and flushes, so a restarted instance (new rings) loses nothing either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import posix_ipc
import pyarrow as pa

from mdpipe import config as config_mod
from mdpipe.counters import ARCHIVER
from mdpipe.history import schema
from mdpipe.history.store import (
    Journal,
    day_of,
    discard_temp,
    expire,
    finished_days,
    is_kind_dir,
    write_temp,
)
from mdpipe.readers import LayoutError, NoSuchRingError, Reader, attach
from mdpipe.shm.segment import list_segments, read_status
from mdpipe.shm.status import StatusWriter
from mdpipe.tailer import RingTailer

log = logging.getLogger("mdpipe.archiver")

COUNTERS = ARCHIVER.names  # declared with their meanings in mdpipe/counters.py
WRITE_ERRORS = COUNTERS.index("write_errors")
DAYS_EXPIRED = COUNTERS.index("days_expired")
DAYS_COMPACTED = COUNTERS.index("days_compacted")
FILES_WRITTEN = COUNTERS.index("files_written")
BYTES_WRITTEN = COUNTERS.index("bytes_written")
G_LAG_RECORDS = COUNTERS.index("g_lag_records")
G_LAG_NS = COUNTERS.index("g_lag_ns")
G_BUFFERED = COUNTERS.index("g_buffered")
G_RINGS = COUNTERS.index("g_rings")
ARCHIVED = {k: f"{k}_archived" for k in ("trades", "books", "tickers", "candles")}  # by kind
LOST = {k: COUNTERS.index(f"{k}_lost") for k in ARCHIVED}
TOTALS = [n for n in COUNTERS if not n.startswith("g_")]

MAX_BUFFERED = 500_000  # records (at most ~200 MB of 10-level books): flush early past this
DISCOVER_EVERY = 0.5
EXPIRE_EVERY = 3600.0
COMPACT_EVERY = 60.0  # seconds between looks for finished days to merge
COMPACT_AT_MOST = 8  # day partitions merged per look, so the loop never stalls long
POLL = 0.02  # seconds between passes unless the last one read a full batch: history is not
# latency-bound, and batches of many records cost far less per record than one at a time
NS_PER_DAY = 86_400 * 10**9


RING_KINDS = {"books": "book", "trades": "trade", "tickers": "ticker"}  # + candles_<interval>


def archive_kind(ring: str) -> str | None:
    """The kind directory a ring's records go to (candles_1m.usdm.0 -> candles_1m), or None."""
    head = ring.split(".", 1)[0]
    return head if is_kind_dir(head) else None


def ring_key(ring: str) -> str:
    """A ring name as it appears in counter names (books.sim.0 -> books_sim_0)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in ring)


class _Ring(RingTailer):
    """A tailed ring: its kind, venue, symbol names and segment identity."""

    __slots__ = ("kind", "base", "venue", "symbols", "start_ns")

    def __init__(
        self,
        name: str,
        kind: str,
        reader: Reader,
        counters: np.ndarray,
        cursor_ix: int | None,
        venue: str,
    ) -> None:
        super().__init__(name, reader, counters, cursor_ix)
        self.kind = kind  # the kind directory: books, trades, tickers, candles_1m, ...
        self.base = schema.base_kind(kind)
        self.venue = venue
        self.symbols: list[str] = []
        self.start_ns = 0

    def identity(self) -> dict[str, int]:
        return {"generation": self.reader.generation, "start_ns": self.start_ns}


def same_segment(saved: dict[str, int], generation: int, start_ns: int) -> bool:
    """Whether a saved cursor belongs to this segment: the same writer run, or a later run of
    the same segment (a writer restarted in place keeps the cursor and bumps the generation).
    A new segment (an instance restart) starts again at generation 1."""
    if generation == saved.get("generation"):
        return start_ns == saved.get("start_ns")
    return generation > saved.get("generation", 0)


class Archiver:
    """The archiving loop of one instance; `run(stop)` until stop is set."""

    def __init__(self, cfg: config_mod.Config, *, clock: Callable[[], int] = time.time_ns) -> None:
        hist = cfg.history
        self.instance = cfg.instance
        self.root = Path(hist.dir)
        self.depth = hist.book_depth
        self.interval_ns = hist.book_interval_ms * 1_000_000
        self.flush_interval = hist.flush_interval
        self.keep_days = hist.keep_days
        self.batch = hist.batch
        self.kinds = set(hist.kinds)  # books, trades, tickers, candles: the rings to archive
        self.stop_timeout = cfg.supervisor.stop_timeout
        self.clock = clock
        self.journal = Journal.load(self.root, cfg.instance)
        for path in self.journal.recover():
            log.info("removed %s: its flush was never committed", path)
        self.status = StatusWriter.create(
            cfg.instance,
            "archiver",
            counters=COUNTERS,
            mode=config_mod.segment_mode(cfg),
            group=cfg.shm.group,
        )
        self.c = self.status.counters
        for i, name in enumerate(COUNTERS):  # the totals continue across restarts
            if not name.startswith("g_"):
                self.c[i] = self.journal.totals.get(name, 0)
        self.rings: dict[str, _Ring] = {}
        self.refused: set[str] = set()
        # (kind, venue, symbol, day) -> record arrays waiting for the flush
        self.buffers: dict[tuple[str, str, str, str], list[np.ndarray]] = {}
        self.buffered = 0
        self.pending_skipped = 0
        self.pending_commit_ts = 0
        self.book_slots = dict(self.journal.book_slots)
        self.flushed_commit_ts = 0
        self.full_batch = False  # the last pass read a full batch from some ring: go on at once

    # ----- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Archive until stop is set; then drain the rings of a stopping ingest and flush."""
        self._discover()
        self._expire()
        next_discover = time.monotonic()
        next_flush = next_discover + self.flush_interval
        next_expire = next_discover + EXPIRE_EVERY
        next_compact = next_discover
        while not stop.is_set():
            self.step()
            now = time.monotonic()
            if now >= next_discover:
                next_discover = now + DISCOVER_EVERY
                self._discover()
                self._gauges()
            if now >= next_flush or self.buffered >= MAX_BUFFERED:
                if self.flush():
                    next_flush = now + self.flush_interval
                    if now >= next_compact:
                        next_compact = now + COMPACT_EVERY
                        self.compact()
                else:
                    next_flush = now + min(self.flush_interval, 1.0)  # retry soon
            if now >= next_expire:
                next_expire = now + EXPIRE_EVERY
                self._expire()
            if not self.full_batch:
                time.sleep(POLL)
        self.drain()

    def drain(self) -> None:
        """Read what the writers still commit while they stop (bounded), then flush it all."""
        deadline = time.monotonic() + self.stop_timeout * 0.6
        while True:
            got = self.step()
            writers = any(r.reader.writer_alive for r in self.rings.values())
            if not got and (not writers or time.monotonic() >= deadline):
                break
            if not got:
                time.sleep(POLL / 10)
        if not self.flush():
            log.error("the final flush failed: %d records not archived", self.buffered)
        self._gauges()

    def step(self) -> int:
        """One pass over every ring; returns records read."""
        got = 0
        self.full_batch = False
        for ring in list(self.rings.values()):
            recs = ring.read(self.batch)
            self.full_batch |= len(recs) == self.batch
            lost = ring.take_lost()
            if lost:
                self.c[LOST[ring.base]] += lost
                log.warning(
                    "ring %s: %d records overwritten before the archiver read them", ring.name, lost
                )
            if not len(recs):
                continue
            got += len(recs)
            self._route(ring, recs)
        return got

    # ----- records into buffers -----------------------------------------------------------

    def _route(self, ring: _Ring, recs: np.ndarray) -> None:
        """Group records by symbol and UTC day (books through the cadence) into the buffers."""
        if int(recs["symbol_id"].max()) >= len(ring.symbols):
            self._load_symbols(ring)
        ts = schema.record_ts(ring.kind, recs)
        day_no = ts // NS_PER_DAY
        key = recs["symbol_id"].astype(np.int64) * 1_000_000 + day_no
        order = np.argsort(key, kind="stable")
        key_sorted = key[order]
        starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            idx = order[a:b]
            sid = int(recs["symbol_id"][idx[0]])
            symbol = ring.symbols[sid] if sid < len(ring.symbols) else f"id{sid}"
            part = recs[idx]
            if ring.kind == "books":
                part = self._cadence(ring.venue, symbol, part, ts[idx])
                if not len(part):
                    continue
                part = self._trim_levels(part)
            k = (ring.kind, ring.venue, symbol, day_of(int(ts[idx[0]])))
            self.buffers.setdefault(k, []).append(part)
            self.buffered += len(part)
        self.pending_commit_ts = max(self.pending_commit_ts, int(recs["commit_ts_ns"].max()))

    def _trim_levels(self, part: np.ndarray) -> np.ndarray:
        """Keep book_depth levels (buffers hold less memory than full-depth records)."""
        dt = np.dtype(
            [(n, part.dtype.fields[n][0]) for n in schema.BOOK_COLUMNS]
            + [("bids", "<f8", (self.depth, 2)), ("asks", "<f8", (self.depth, 2))]
        )
        out = np.empty(len(part), dt)
        for n in schema.BOOK_COLUMNS:
            out[n] = part[n]
        out["bids"] = part["bids"][:, : self.depth]
        out["asks"] = part["asks"][:, : self.depth]
        np.minimum(out["bid_count"], self.depth, out=out["bid_count"])  # levels kept, not sent
        np.minimum(out["ask_count"], self.depth, out=out["ask_count"])
        return out

    def _cadence(self, venue: str, symbol: str, part: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The first book of each interval_ns of exchange time not yet archived for the symbol."""
        if not self.interval_ns:
            return part
        slot = ts // self.interval_ns
        name = f"{venue}/{symbol}"
        last = self.book_slots.get(name, -1)
        before = np.maximum.accumulate(np.r_[last, slot[:-1]])
        keep = slot > before
        self.book_slots[name] = int(max(last, slot.max()))
        self.pending_skipped += int(len(part) - keep.sum())
        return part[keep]

    # ----- flush --------------------------------------------------------------------------

    def flush(self) -> bool:
        """Write the buffered records and commit them with the cursors; False if it failed."""
        j = self.journal
        flush_no = j.flush_no + 1
        written: list = []
        nbytes = 0
        archived = dict.fromkeys(ARCHIVED, 0)
        try:
            for (kind, venue, symbol, day), parts in sorted(self.buffers.items()):
                recs = parts[0] if len(parts) == 1 else np.concatenate(parts)
                table = schema.table_of(kind, recs, self.depth)
                archived[schema.base_kind(kind)] += len(recs)
                final = j.file_name(kind, venue, symbol, day, flush_no)
                nbytes += write_temp(table, final)
                written.append(final)
            totals = {n: int(self.c[COUNTERS.index(n)]) for n in TOTALS}
            for base, n in archived.items():
                totals[ARCHIVED[base]] += n
            totals["books_skipped"] += self.pending_skipped
            totals["files_written"] += len(written)
            totals["bytes_written"] += nbytes
            totals["flushes"] += 1
            j.flush_no = flush_no
            j.rings = {
                name: {"cursor": r.reader.position, **r.identity()}
                for name, r in self.rings.items()
            } | {n: v for n, v in j.rings.items() if n not in self.rings}
            j.book_slots = dict(self.book_slots)
            j.totals = totals
            j.commit(written)
        except OSError as exc:
            self.c[WRITE_ERRORS] += 1
            j.flush_no = flush_no - 1
            log.error(
                "flush %d failed, %d records kept in memory and retried: %s",
                flush_no,
                self.buffered,
                exc,
            )
            discard_temp(written)
            return False
        for i, name in enumerate(COUNTERS):
            if name in totals:
                self.c[i] = totals[name]
        for r in self.rings.values():
            r.save()
        self.buffers.clear()
        self.buffered = self.pending_skipped = 0
        self.flushed_commit_ts = max(self.flushed_commit_ts, self.pending_commit_ts)
        return True

    def compact(self, today: date | None = None) -> int:
        """Merge finished days' files into one per partition (buffers are empty: just flushed)."""
        done = 0
        for day_dir in finished_days(self.root, self.instance, today)[:COMPACT_AT_MOST]:
            try:
                got = self.journal.compact(day_dir)
            except (OSError, pa.ArrowException) as exc:
                self.c[WRITE_ERRORS] += 1
                log.error("compacting %s failed: %s", day_dir, exc)
                break
            if got is not None:
                done += 1
                self.c[DAYS_COMPACTED] += 1
                self.c[FILES_WRITTEN] += 1
                self.c[BYTES_WRITTEN] += got[1]
        if done:
            self.journal.totals = {n: int(self.c[COUNTERS.index(n)]) for n in TOTALS}
        return done

    # ----- rings --------------------------------------------------------------------------

    def _discover(self) -> None:
        """Attach new books, trades, tickers and candles rings (from the saved cursor or the
        oldest record)."""
        present = {ring for _, ring in list_segments(self.instance)}
        for name in sorted(present - self.rings.keys()):
            kind = archive_kind(name)
            if kind is None or schema.base_kind(kind) not in self.kinds:
                continue
            try:
                reader = attach(self.instance, name, kind=RING_KINDS.get(kind, "candle"))
                st = read_status(self.instance, name)
            except (NoSuchRingError, posix_ipc.ExistentialError):
                continue
            except (LayoutError, PermissionError) as exc:
                if name not in self.refused:
                    self.refused.add(name)
                    log.error("not archiving ring %s: %s", name, exc)
                continue
            if kind == "books" and reader.dtype["bids"].shape[0] < self.depth:
                if name not in self.refused:
                    self.refused.add(name)
                    log.error(
                        "not archiving ring %s: depth %d < history.book_depth %d",
                        name,
                        reader.dtype["bids"].shape[0],
                        self.depth,
                    )
                reader.close()
                continue
            key = ring_key(name)
            cursor_ix = self._counter_index("g_cursor_" + key)
            ring = _Ring(name, kind, reader, self.c, cursor_ix, st.exchange)
            ring.start_ns = st.start_time_ns
            ring.symbols = list(st.symbols)
            saved = self.journal.rings.get(name)
            if saved is not None and same_segment(saved, st.generation, st.start_time_ns):
                ring.resume(int(saved["cursor"]))
            else:
                reader.seek_oldest()
                ring.resume(None)
            self.rings[name] = ring
            log.info("archiving ring %s (%s) from record %d", name, st.exchange, reader.position)
        for name, ring in list(self.rings.items()):
            if name not in present and not ring.reader.writer_alive and not ring.backlog:
                self.step()  # anything read is buffered with its cursor before the ring goes
                ring.close()
                del self.rings[name]
                log.info("ring %s is gone", name)
        self.c[G_RINGS] = len(self.rings)

    def _load_symbols(self, ring: _Ring) -> None:
        try:
            st = read_status(self.instance, ring.name)
        except (posix_ipc.ExistentialError, LayoutError):
            return
        ring.symbols = list(st.symbols)

    def _counter_index(self, name: str) -> int | None:
        try:
            return self.status.counter_index(name)
        except ValueError as exc:
            log.info("no counter %s: %s", name, exc)
            return None

    def _gauges(self) -> None:
        self.c[G_LAG_RECORDS] = sum(r.backlog for r in self.rings.values())
        self.c[G_BUFFERED] = self.buffered
        if self.flushed_commit_ts:
            self.c[G_LAG_NS] = max(0, self.clock() - self.flushed_commit_ts)
        self.status.heartbeat()

    def _expire(self) -> None:
        removed = expire(self.root, self.keep_days)
        if removed:
            self.c[DAYS_EXPIRED] += len(removed)
            log.info(
                "history.keep_days=%d: removed %d day partitions", self.keep_days, len(removed)
            )

    def close(self) -> None:
        for ring in self.rings.values():
            ring.close()
        self.status.close()
