"""Depth diffs per second through one ingest core, per venue: the recorded Binance futures
tape, and a synthetic Bybit linear book of comparable size (orderbook.200, ~60 levels a delta).

Each diff goes through the same stages an ingest process runs: parse, sync rules, book
update, top-20 extraction into a book record. mdpipe (levels read from the raw text, the
sync machine, the book) runs on both hot paths, C (mdpipe/_book.c, mdpipe/venues/_levels.c)
and pure Python (mdpipe.hot_path.use switches them), against what a user would otherwise
write with orjson and sortedcontainers, with the same pu check and top-20 copy: (1) a
SortedDict per side read with islice over its items, the common way; (2) a dict plus a
SortedList per side read by slicing the SortedList, a tuned version. Runs alternate in one
process pinned to one core; each figure is the best of N runs, in CPU time. After the runs,
every pipeline's last record must hold the same top 20 levels. The targets: the C path's
full rows at least 2.5x baseline 1 and 2x baseline 2 on every venue and form.

A pipeline is a list of stage functions, each taking the previous stage's output. The
"ring commit" rows run the ingest process's own code after the parser: its per-symbol book
(sync rules, book, top 20, flags) committing every record into a real shared-memory ring.

The Bybit table runs the same stages on the Bybit simulator's own frames (snapshot, then
deltas): mdpipe's Bybit parser and sync rules against orjson plus the same books, with the
u + 1 check.

The two OKX tables run them on the OKX simulator's `books` frames for BTC-USDT-SWAP (the
in-band snapshot, then updates of 40 engine steps each, ~47 levels): as OKX sends them
today (checksum 0: the seqId/prevSeqId chain), and in the legacy form recorded before 2026
(every checksum verified over the top 25 levels' raw text, one update in ten without
seqId), where the baselines keep each level's text and verify the checksum too.

Run: .venv/bin/python bench/ingest_throughput.py [--runs N]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any, NamedTuple

import numpy as np
import orjson
from sortedcontainers import SortedDict, SortedList

from mdpipe import hot_path as hot_path_module
from mdpipe.ingest.backoff import Backoff
from mdpipe.ingest.counters import COUNTERS, Counters
from mdpipe.ingest.symbolbook import SymbolBook
from mdpipe.shm.segment import unlink_instance
from mdpipe.shm.writer import RingWriter
from mdpipe.sim.venues._okx.record import book_frames
from mdpipe.sim.venues.bybit import synthetic_frames
from mdpipe.venues.base import BookSync
from mdpipe.venues.binance.sync import APPLY, book_sync
from mdpipe.venues.binance.wire import FUTURES, BinanceParser, DepthDiff, parse_snapshot
from mdpipe.venues.bybit.sync import BybitBookSync
from mdpipe.venues.bybit.wire import BybitParser
from mdpipe.venues.local_book import LocalBook
from mdpipe.venues.okx.checksum import CHECKSUM_LEVELS, book_checksum
from mdpipe.venues.okx.parser import OkxParser
from mdpipe.venues.okx.sync import OkxBookSync
from mdpipe.venues.tapes import FUTURES_TAPE, is_snapshot, load_tape, tape_path

DEPTH = 20
TARGETS = {"baseline 1": 2.5, "baseline 2": 2.0}  # the C path's least ratio to each baseline

Stage = Callable[[Any], Any]

C_PATH, PY_PATH = "C", "Python"


@contextmanager
def hot_path(path: str) -> Iterator[None]:
    """Run the block on the C or the Python hot path (alternating runs in one process)."""
    with hot_path_module.use(hot_path_module.C if path == C_PATH else hot_path_module.PYTHON):
        yield


class Pipeline(NamedTuple):
    """The stages one diff goes through, and the book record they write."""

    stages: list[Stage]
    bids: np.ndarray
    asks: np.ndarray


class Tape:
    """The futures tape split the way a live client sees it: diffs before and after the snapshot."""

    def __init__(self) -> None:
        lines = [raw for _, raw in load_tape(tape_path(FUTURES_TAPE))]
        at = next(i for i, raw in enumerate(lines) if is_snapshot(raw))
        self.snapshot = lines[at]
        self.before = [raw for raw in lines[:at] if b"depthUpdate" in raw]
        self.after = [raw for raw in lines[at + 1 :] if b"depthUpdate" in raw]


def parse_diff(raw: bytes) -> DepthDiff:
    """Parse one depth diff (for the tape statistics line)."""
    diff = BinanceParser(FUTURES).parse(raw)
    assert isinstance(diff, DepthDiff)
    return diff


def book_record() -> tuple[np.ndarray, np.ndarray]:
    """The bids and asks fields of a book record; the ring's record has the same shapes."""
    return np.zeros((DEPTH, 2)), np.zeros((DEPTH, 2))


def mdpipe_pipeline(tape: Tape) -> Pipeline:
    """parse -> sync + book -> top-20 into the record, with the book synced from the tape."""
    parser = BinanceParser(FUTURES)
    local = LocalBook(book_sync(FUTURES), "BTCUSDT", min_depth=DEPTH)
    for raw in tape.before:
        local.on_diff(parser.parse(raw))
    local.on_snapshot(parse_snapshot(tape.snapshot))
    book = local.book
    bids, asks = book_record()

    def sync_and_apply(diff: DepthDiff) -> DepthDiff:
        if local.on_diff(diff) is not APPLY:
            raise RuntimeError(f"diff u={diff.last_id} not applied: {local.sync.reason}")
        return diff

    def extract(diff: DepthDiff) -> tuple[int, int]:
        return book.write_top(bids, asks)

    return Pipeline([parser.parse, sync_and_apply, extract], bids, asks)


BENCH_INSTANCE = f"bench{os.getpid()}"


def _bench_writer(writers: list[RingWriter]) -> RingWriter:
    w = RingWriter.create(
        BENCH_INSTANCE,
        f"books.bench.{len(writers)}",
        "book",
        symbols=["BTCUSDT"],
        capacity=1024,
        depth=DEPTH,
        max_symbols=1,
        counters=COUNTERS,
    )
    writers.append(w)
    return w


def _symbol_book(w: RingWriter, sync: BookSync) -> SymbolBook:
    log = logging.getLogger("bench")
    return SymbolBook("BTCUSDT", 0, sync, w, Counters(w), Backoff(1, 1), lambda *a: None, log)


def ingest_pipeline(tape: Tape, writers: list[RingWriter]) -> Pipeline:
    """parse -> the ingest's SymbolBook: sync + book + top-20 + commit into a shared-memory ring."""
    parser = BinanceParser(FUTURES)
    w = _bench_writer(writers)
    sb = _symbol_book(w, book_sync(FUTURES))
    for raw in tape.before:
        sb.on_diff(parser.parse(raw), 0, raw)
    sb.on_snapshot(parse_snapshot(tape.snapshot), 0)
    now = time.time_ns

    def sync_book_commit(diff: DepthDiff) -> None:
        # The live loop stamps each frame's receive time; so does this stage.
        if sb.on_diff(diff, now(), b"") is not APPLY:
            raise RuntimeError(f"diff u={diff.last_id} not applied: {sb.sync.reason}")

    return Pipeline([parser.parse, sync_book_commit], w.bids, w.asks)


class SortedDictBook:
    """Baseline 1, the book most users write: a SortedDict per side keyed by price."""

    def __init__(self, snapshot: dict) -> None:
        self.bids = SortedDict({float(p): float(q) for p, q in snapshot["bids"]})
        self.asks = SortedDict({float(p): float(q) for p, q in snapshot["asks"]})

    def apply(self, data: dict) -> None:
        for side, levels in ((self.bids, data["b"]), (self.asks, data["a"])):
            for p, q in levels:
                price, qty = float(p), float(q)
                if qty == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty

    def write_top(self, bids_out: np.ndarray, asks_out: np.ndarray) -> tuple[int, int]:
        bids = list(islice(reversed(self.bids.items()), DEPTH))
        asks = list(islice(self.asks.items(), DEPTH))
        bids_out[: len(bids)] = bids
        asks_out[: len(asks)] = asks
        return len(bids), len(asks)


class SortedListBook:
    """Baseline 2, tuned: a plain dict of levels plus a SortedList of prices per side,
    read by slicing the SortedList (bids keyed by negated price so both read from the front)."""

    def __init__(self, snapshot: dict) -> None:
        self.bids = {-float(p): float(q) for p, q in snapshot["bids"]}
        self.asks = {float(p): float(q) for p, q in snapshot["asks"]}
        self.bid_keys = SortedList(self.bids)
        self.ask_keys = SortedList(self.asks)

    def apply(self, data: dict) -> None:
        for levels, sign, side, keys in (
            (data["b"], -1.0, self.bids, self.bid_keys),
            (data["a"], 1.0, self.asks, self.ask_keys),
        ):
            for p, q in levels:
                price, qty = sign * float(p), float(q)
                if qty:
                    if price not in side:
                        keys.add(price)
                    side[price] = qty
                elif side.pop(price, None) is not None:
                    keys.remove(price)

    def write_top(self, bids_out: np.ndarray, asks_out: np.ndarray) -> tuple[int, int]:
        bids = self.bid_keys[:DEPTH]
        asks = self.ask_keys[:DEPTH]
        nb, na = len(bids), len(asks)
        bids_out[:nb, 0] = [-k for k in bids]
        bids_out[:nb, 1] = [self.bids[k] for k in bids]
        asks_out[:na, 0] = asks
        asks_out[:na, 1] = [self.asks[k] for k in asks]
        return nb, na


class FuturesRule:
    """The baselines' sync check: first diff spans the snapshot id, then pu == previous u."""

    def __init__(self, snapshot_id: int) -> None:
        self.snapshot_id = snapshot_id
        self.last_u = -1

    def admit(self, data: dict) -> bool:
        if self.last_u < 0:
            if data["u"] < self.snapshot_id:
                return False
            if not data["U"] <= self.snapshot_id:
                raise RuntimeError("baseline: gap at the first diff")
        elif data["pu"] != self.last_u:
            raise RuntimeError("baseline: gap")
        self.last_u = data["u"]
        return True


def baseline_pipeline(
    tape: Tape, book_class: type[SortedDictBook] | type[SortedListBook]
) -> Pipeline:
    """orjson parse -> pu check + sortedcontainers book update -> top-20 into the record."""
    snapshot = orjson.loads(tape.snapshot)
    book = book_class(snapshot)
    rule = FuturesRule(snapshot["lastUpdateId"])
    bids, asks = book_record()
    for raw in tape.before:
        data = orjson.loads(raw)["data"]
        if rule.admit(data):
            book.apply(data)

    def parse(raw: bytes) -> dict:
        return orjson.loads(raw)["data"]

    def sync_and_apply(data: dict) -> dict:
        if rule.admit(data):
            book.apply(data)
        return data

    def extract(data: dict) -> tuple[int, int]:
        return book.write_top(bids, asks)

    return Pipeline([parse, sync_and_apply, extract], bids, asks)


class BybitFrames:
    """The Bybit simulator's frames for one linear symbol: the snapshot, then the deltas."""

    def __init__(self, pushes: int = 2000, steps_per_push: int = 60) -> None:
        frames = [raw for _, raw in synthetic_frames("BTCUSDT", 200, pushes, steps_per_push)]
        self.snapshot = frames[0]
        self.after = [raw for raw in frames[1:] if raw.startswith(b'{"topic":"orderbook.')]


def bybit_mdpipe_pipeline(frames: BybitFrames) -> Pipeline:
    """parse -> Bybit sync + book -> top-20 into the record."""
    parser = BybitParser("linear")
    local = LocalBook(BybitBookSync(), "BTCUSDT", min_depth=DEPTH)
    local.on_snapshot(parser.parse(frames.snapshot))
    book = local.book
    bids, asks = book_record()

    def sync_and_apply(diff: DepthDiff) -> DepthDiff:
        if local.on_diff(diff) is not APPLY:
            raise RuntimeError(f"delta u={diff.first_id} not applied: {local.sync.reason}")
        return diff

    def extract(diff: DepthDiff) -> tuple[int, int]:
        return book.write_top(bids, asks)

    return Pipeline([parser.parse, sync_and_apply, extract], bids, asks)


def bybit_ingest_pipeline(frames: BybitFrames, writers: list[RingWriter]) -> Pipeline:
    """parse -> the ingest's SymbolBook with Bybit's rules, committing into a ring."""
    parser = BybitParser("linear")
    w = _bench_writer(writers)
    sb = _symbol_book(w, BybitBookSync())
    sb.on_snapshot(parser.parse(frames.snapshot), 0)
    now = time.time_ns

    def sync_book_commit(diff: DepthDiff) -> None:
        if sb.on_diff(diff, now(), b"") is not APPLY:
            raise RuntimeError(f"delta u={diff.first_id} not applied: {sb.sync.reason}")

    return Pipeline([parser.parse, sync_book_commit], w.bids, w.asks)


def bybit_baseline_pipeline(
    frames: BybitFrames, book_class: type[SortedDictBook] | type[SortedListBook]
) -> Pipeline:
    """orjson parse -> u + 1 check + sortedcontainers book update -> top-20 into the record."""
    data = orjson.loads(frames.snapshot)["data"]
    book = book_class({"bids": data["b"], "asks": data["a"]})
    last = [data["u"]]
    bids, asks = book_record()

    def parse(raw: bytes) -> dict:
        return orjson.loads(raw)["data"]

    def sync_and_apply(data: dict) -> dict:
        if data["u"] != last[0] + 1:
            raise RuntimeError("baseline: gap")
        last[0] = data["u"]
        book.apply(data)
        return data

    def extract(data: dict) -> tuple[int, int]:
        return book.write_top(bids, asks)

    return Pipeline([parse, sync_and_apply, extract], bids, asks)


class OkxFrames:
    """The OKX simulator's `books` frames for one swap: the in-band snapshot, then updates
    (checksum 0 as OKX sends today; `legacy`: non-zero checksums, some without seqId)."""

    def __init__(self, legacy: bool, pushes: int = 1000, steps_per_push: int = 40) -> None:
        self.legacy = legacy
        self.snapshot, self.after = book_frames("BTC-USDT-SWAP", pushes, steps_per_push, legacy)


def okx_mdpipe_pipeline(frames: OkxFrames) -> Pipeline:
    """parse -> OKX seqId chain (+ checksum when sent) + book -> top-20 into the record."""
    parser = OkxParser()
    local = LocalBook(OkxBookSync(), "BTC-USDT-SWAP", min_depth=DEPTH)
    local.on_snapshot(parser.parse(frames.snapshot))
    book = local.book
    bids, asks = book_record()

    def sync_and_apply(diff: DepthDiff) -> DepthDiff:
        if local.on_diff(diff) is not APPLY:
            raise RuntimeError(f"update seqId={diff.last_id} not applied: {local.sync.reason}")
        return diff

    def extract(diff: DepthDiff) -> tuple[int, int]:
        return book.write_top(bids, asks)

    return Pipeline([parser.parse, sync_and_apply, extract], bids, asks)


def okx_ingest_pipeline(frames: OkxFrames, writers: list[RingWriter]) -> Pipeline:
    """parse -> the ingest's SymbolBook with OKX's rules, committing into a ring."""
    parser = OkxParser()
    w = _bench_writer(writers)
    sb = _symbol_book(w, OkxBookSync())
    sb.on_snapshot(parser.parse(frames.snapshot), 0)
    now = time.time_ns

    def sync_book_commit(diff: DepthDiff) -> None:
        if sb.on_diff(diff, now(), b"") is not APPLY:
            raise RuntimeError(f"update seqId={diff.last_id} not applied: {sb.sync.reason}")

    return Pipeline([parser.parse, sync_book_commit], w.bids, w.asks)


class OkxSortedDictBook(SortedDictBook):
    """Baseline 1 on OKX levels `[px, sz, "0", orders]`, keeping each level's text when the
    feed sends checksums (a user verifying them needs the raw strings)."""

    def __init__(self, snapshot: dict, texts: bool) -> None:
        pairs = {side: [lv[:2] for lv in snapshot[side]] for side in ("bids", "asks")}
        super().__init__(pairs)
        self.texts = texts
        self.bid_text = {float(p): f"{p}:{q}" for p, q, *_ in snapshot["bids"]}
        self.ask_text = {float(p): f"{p}:{q}" for p, q, *_ in snapshot["asks"]}

    def apply(self, data: dict) -> None:
        for side, text, levels in (
            (self.bids, self.bid_text, data["bids"]),
            (self.asks, self.ask_text, data["asks"]),
        ):
            for p, q, _, _ in levels:
                price, qty = float(p), float(q)
                if qty == 0:
                    side.pop(price, None)
                    if self.texts:
                        text.pop(price, None)
                else:
                    side[price] = qty
                    if self.texts:
                        text[price] = f"{p}:{q}"

    def checksum(self) -> int:
        bids = [self.bid_text[p] for p in islice(reversed(self.bids), CHECKSUM_LEVELS)]
        asks = [self.ask_text[p] for p in islice(self.asks, CHECKSUM_LEVELS)]
        return book_checksum(bids, asks)


class OkxSortedListBook(SortedListBook):
    """Baseline 2 on OKX levels, with each level's text when the feed sends checksums."""

    def __init__(self, snapshot: dict, texts: bool) -> None:
        pairs = {side: [lv[:2] for lv in snapshot[side]] for side in ("bids", "asks")}
        super().__init__(pairs)
        self.texts = texts
        self.bid_text = {-float(p): f"{p}:{q}" for p, q, *_ in snapshot["bids"]}
        self.ask_text = {float(p): f"{p}:{q}" for p, q, *_ in snapshot["asks"]}

    def apply(self, data: dict) -> None:
        texts = self.texts
        for levels, sign, side, keys, text in (
            (data["bids"], -1.0, self.bids, self.bid_keys, self.bid_text),
            (data["asks"], 1.0, self.asks, self.ask_keys, self.ask_text),
        ):
            for p, q, _, _ in levels:
                price, qty = sign * float(p), float(q)
                if qty:
                    if price not in side:
                        keys.add(price)
                    side[price] = qty
                    if texts:
                        text[price] = f"{p}:{q}"
                elif side.pop(price, None) is not None:
                    keys.remove(price)
                    if texts:
                        del text[price]

    def checksum(self) -> int:
        bids = [self.bid_text[k] for k in self.bid_keys[:CHECKSUM_LEVELS]]
        asks = [self.ask_text[k] for k in self.ask_keys[:CHECKSUM_LEVELS]]
        return book_checksum(bids, asks)


def okx_baseline_pipeline(
    frames: OkxFrames, book_class: type[OkxSortedDictBook] | type[OkxSortedListBook]
) -> Pipeline:
    """orjson parse -> prevSeqId == seqId chain (+ checksum) + sortedcontainers book -> top-20."""
    snap = orjson.loads(frames.snapshot)["data"][0]
    book = book_class(snap, frames.legacy)
    last = [snap["seqId"]]
    bids, asks = book_record()

    def parse(raw: bytes) -> dict:
        return orjson.loads(raw)["data"][0]

    def sync_and_apply(data: dict) -> dict:
        seq = data.get("seqId")
        if seq is not None and last[0] is not None and data["prevSeqId"] != last[0]:
            raise RuntimeError("baseline: gap")
        last[0] = seq
        book.apply(data)
        if data["checksum"] and book.checksum() != data["checksum"]:
            raise RuntimeError("baseline: checksum mismatch")
        return data

    def extract(data: dict) -> tuple[int, int]:
        return book.write_top(bids, asks)

    return Pipeline([parse, sync_and_apply, extract], bids, asks)


def first_stages(pipeline: Pipeline, count: int) -> Pipeline:
    """The pipeline cut after its first `count` stages."""
    return pipeline._replace(stages=pipeline.stages[:count])


def run(stages: list[Stage], raws: list[bytes]) -> float:
    """CPU seconds of this thread to push every raw message through every stage.

    CPU time, not wall time: the rate per core, unaffected by other processes that
    preempt this one on a shared machine.
    """
    start = time.thread_time()
    for raw in raws:
        value = raw
        for stage in stages:
            value = stage(value)
    return time.thread_time() - start


def pin_to_one_core() -> str:
    """Pin this process to its last allowed core (after all imports), so rates are per core."""
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[-1]})
    return f"core {sorted(os.sched_getaffinity(0))[0]} of {len(cores)}"


BASELINE_1 = "baseline 1: SortedDict, islice top-20"
BASELINE_2 = "baseline 2: dict + SortedList, tuned"
PARSE = "parse only"
BOOK = "parse + sync + book"
FULL = "parse + sync + book + top-20"
COMMIT = "... + ring commit (ingest path)"


def row(path: str, what: str) -> str:
    """A row's name: which hot path, which stages."""
    return f"mdpipe {path}: {what}"


Row = tuple[str | None, Callable[[], Pipeline]]  # (hot path or None for a baseline, build)


def mdpipe_rows(full: Callable[[], Pipeline], commit: Callable[[], Pipeline]) -> dict[str, Row]:
    """The four mdpipe rows of each hot path, from a venue's full and ingest pipelines."""
    rows: dict[str, Row] = {}
    for path in (C_PATH, PY_PATH):
        rows[row(path, PARSE)] = (path, lambda: first_stages(full(), 1))
        rows[row(path, BOOK)] = (path, lambda: first_stages(full(), 2))
        rows[row(path, FULL)] = (path, full)
        rows[row(path, COMMIT)] = (path, commit)
    return rows


def measure(rows: dict[str, Row], frames: list[bytes], runs: int) -> dict[str, float]:
    """Best CPU seconds of each pipeline over `runs` alternating runs; checks the same work."""
    best = dict.fromkeys(rows, float("inf"))
    records = {}
    for _ in range(runs):
        for name, (path, build) in rows.items():
            with hot_path(path or C_PATH):
                pipeline = build()
                best[name] = min(best[name], run(pipeline.stages, frames))
            records[name] = pipeline
    reference = records[row(C_PATH, FULL)]
    checked = [BASELINE_1, BASELINE_2] + [
        row(p, w) for p in (C_PATH, PY_PATH) for w in (FULL, COMMIT)
    ]
    for name in checked:
        for side in ("bids", "asks"):
            if not np.array_equal(getattr(records[name], side), getattr(reference, side)):
                raise SystemExit(f"{name} ends with other {side} than mdpipe C: not the same work")
    return best


def report(best: dict[str, float], n: int) -> None:
    """The table, then the targets."""
    print(f"{'implementation':44s} {'diffs/s':>10s} {'µs/diff':>9s} {'vs b.1':>8s} {'vs b.2':>8s}")
    for name, seconds in best.items():
        print(
            f"{name:44s} {n / seconds:10,.0f} {seconds / n * 1e6:9.2f} "
            f"{best[BASELINE_1] / seconds:7.2f}x {best[BASELINE_2] / seconds:7.2f}x"
        )
    for what in (FULL, COMMIT):
        name = row(C_PATH, what)
        ratios = []
        for baseline in (BASELINE_1, BASELINE_2):
            short = baseline.split(":")[0]
            ratio = best[baseline] / best[name]
            ratios.append(f"{ratio:.2f}x {short} (target >= {TARGETS[short]}x)")
        met = all(
            best[b] / best[name] >= TARGETS[b.split(":")[0]] for b in (BASELINE_1, BASELINE_2)
        )
        print(f"target, {name}: {'met' if met else 'NOT met'}: {', '.join(ratios)}")


def main() -> None:
    """Measure each pipeline of each venue, best of `--runs`, and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    pinned = pin_to_one_core()
    tape = Tape()
    n = len(tape.after)
    levels = sum(len(d.bid_prices) + len(d.ask_prices) for d in map(parse_diff, tape.after))
    bybit = BybitFrames()
    okx = {legacy: OkxFrames(legacy) for legacy in (False, True)}
    writers: list[RingWriter] = []
    rows: dict[str, Row] = {
        BASELINE_1: (None, lambda: baseline_pipeline(tape, SortedDictBook)),
        BASELINE_2: (None, lambda: baseline_pipeline(tape, SortedListBook)),
        **mdpipe_rows(lambda: mdpipe_pipeline(tape), lambda: ingest_pipeline(tape, writers)),
    }
    bybit_rows: dict[str, Row] = {
        BASELINE_1: (None, lambda: bybit_baseline_pipeline(bybit, SortedDictBook)),
        BASELINE_2: (None, lambda: bybit_baseline_pipeline(bybit, SortedListBook)),
        **mdpipe_rows(
            lambda: bybit_mdpipe_pipeline(bybit), lambda: bybit_ingest_pipeline(bybit, writers)
        ),
    }
    okx_rows = {
        legacy: {
            BASELINE_1: (None, lambda f=frames: okx_baseline_pipeline(f, OkxSortedDictBook)),
            BASELINE_2: (None, lambda f=frames: okx_baseline_pipeline(f, OkxSortedListBook)),
            **mdpipe_rows(
                lambda f=frames: okx_mdpipe_pipeline(f),
                lambda f=frames: okx_ingest_pipeline(f, writers),
            ),
        }
        for legacy, frames in okx.items()
    }
    try:
        best = measure(rows, tape.after, args.runs)
        bybit_best = measure(bybit_rows, bybit.after, args.runs)
        okx_best = {
            legacy: measure(okx_rows[legacy], f.after, args.runs) for legacy, f in okx.items()
        }
    finally:
        for w in writers:
            w.close()
        unlink_instance(BENCH_INSTANCE)
    print(
        f"python {platform.python_version()}, numpy {np.__version__}; {pinned}; "
        f"CPU time, best of {args.runs} runs"
    )
    if hot_path_module.IMPLEMENTATION != hot_path_module.C:
        print("the C hot path is not built (or MDPIPE_BOOK=python): its rows ran Python code")
    print(f"\nbinance futures tape: {n} diffs after the snapshot, {levels / n:.1f} levels/diff")
    report(best, n)
    m = len(bybit.after)
    parser = BybitParser("linear")
    deltas = [parser.parse(raw) for raw in bybit.after]
    bybit_levels = sum(len(d.bid_prices) + len(d.ask_prices) for d in deltas)
    print(
        f"\nbybit linear, simulator frames (orderbook.200): {m} deltas after the snapshot, "
        f"{bybit_levels / m:.1f} levels/delta"
    )
    report(bybit_best, m)
    parser = OkxParser()
    for legacy, frames in okx.items():
        k = len(frames.after)
        updates = [parser.parse(raw) for raw in frames.after]
        okx_levels = sum(len(d.bid_prices) + len(d.ask_prices) for d in updates)
        form = (
            "legacy form (checksums verified, 10% without seqId)"
            if legacy
            else "checksum 0 (as sent since June 2026)"
        )
        print(
            f"\nokx swap, simulator frames (books, 400 levels), {form}: {k} updates after the "
            f"snapshot, {okx_levels / k:.1f} levels/update"
        )
        report(okx_best[legacy], k)


if __name__ == "__main__":
    main()
