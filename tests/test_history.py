"""The history archive with real rings, real archiver processes and real Parquet files: every
trade exactly once across kill -9 and a new segment (instance restart), the book cadence,
losses only when lapped, queries and their bad input, replay into rings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import REPO, remove_segments

from mdpipe import history
from mdpipe.history.query import HistoryError, HistoryWarning
from mdpipe.readers import attach
from mdpipe.shm import layout as L
from mdpipe.shm.segment import read_status
from mdpipe.shm.writer import RingWriter

VENUE = "binance-futures"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
T0 = 1_796_000_000_000_000_000  # 2026-11-30T...Z, ns
DEPTH = 8


def wait_for(pred: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Archiver:
    """`python -m mdpipe.history` for an instance, as the supervisor runs it."""

    def __init__(self, instance: str, root: Path, *settings: str) -> None:
        self.instance, self.root, self.settings = instance, root, settings
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "mdpipe.history", "--instance", self.instance]
        for kv in (f"history.dir={self.root}", "history.flush_interval=0.05", *self.settings):
            argv += ["--set", kv]
        self.proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE)

    def journal(self) -> dict:
        try:
            return json.loads((self.root / "_archiver" / f"{self.instance}.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def cursor(self, ring: str) -> int:
        return self.journal().get("rings", {}).get(ring, {}).get("cursor", -1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err.decode()
        return err.decode()


@pytest.fixture
def archive(tmp_path: Path, instance: str) -> Iterator[Archiver]:
    arch = Archiver(instance, tmp_path / "history")
    yield arch
    if arch.proc is not None and arch.proc.poll() is None:
        arch.kill()


def trade_writer(instance: str, capacity: int = 1 << 16) -> RingWriter:
    return RingWriter.create(
        instance, "trades.t.0", "trade", symbols=SYMBOLS, capacity=capacity, exchange=VENUE
    )


def write_trades(w: RingWriter, first_id: int, n: int) -> None:
    for i in range(first_id, first_id + n):
        ts = T0 + i * 1_000_000
        w.commit_trade(i % 2, 0, ts, ts, ts + 500, i, i, i, 100.0 + i % 7, 0.5, 1 if i % 3 else -1)


def archived_trade_ids(root: Path) -> list[int]:
    """Every archived trade id; a skipped (unreadable) file fails the test."""
    ids: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", HistoryWarning)
        for sym in SYMBOLS:
            ids += history.trades(sym, root=root).column("trade_id").to_pylist()
    return ids


# ----- exactly once -----------------------------------------------------------------------


def test_every_trade_exactly_once_across_kill_9(archive: Archiver) -> None:
    w = trade_writer(archive.instance)
    archive.start()
    written = 0
    for _round in range(4):
        write_trades(w, written, 3000)
        written += 3000
        # Kill it after at least one flush of this round and usually mid-way through others.
        before = archive.cursor("trades.t.0")
        wait_for(lambda b=before: archive.cursor("trades.t.0") > b, what="a flush")
        write_trades(w, written, 500)
        written += 500
        archive.kill()
        archive.start()
    wait_for(lambda: archive.cursor("trades.t.0") == written, what="the archiver to catch up")
    w.close()
    archive.stop()
    ids = archived_trade_ids(archive.root)
    assert len(ids) == written
    assert sorted(ids) == list(range(written))
    totals = archive.journal()["totals"]
    assert totals["trades_archived"] == written and totals["trades_lost"] == 0
    # No temporary file of an interrupted flush survives.
    assert not list(archive.root.rglob("*.tmp"))


def test_every_trade_exactly_once_across_a_new_segment(archive: Archiver) -> None:
    """An instance restart unlinks the rings; the new ones start at record 0, generation 1."""
    w = trade_writer(archive.instance)
    archive.start()
    write_trades(w, 0, 4000)
    wait_for(lambda: archive.cursor("trades.t.0") == 4000, what="the first run archived")
    w.close()
    archive.stop()  # drains and flushes, as at an instance stop
    remove_segments(archive.instance)
    w = trade_writer(archive.instance)  # a new segment: its cursor (0) is below the saved one
    write_trades(w, 4000, 1000)
    archive.start()
    wait_for(lambda: archive.cursor("trades.t.0") == 1000, what="the new segment archived")
    archive.kill()  # and once more without a drain: the journal alone says where to go on
    write_trades(w, 5000, 5000)  # the new segment now passes the first one's saved cursor
    archive.start()
    wait_for(lambda: archive.cursor("trades.t.0") == 6000, what="the rest archived")
    w.close()
    archive.stop()
    assert sorted(archived_trade_ids(archive.root)) == list(range(10000))


# ----- losses, cadence --------------------------------------------------------------------


def test_losses_are_counted_exactly_and_only_when_lapped(archive: Archiver) -> None:
    w = trade_writer(archive.instance, capacity=64)
    archive.start()
    write_trades(w, 0, 50)
    wait_for(lambda: archive.cursor("trades.t.0") == 50, what="the first trades")
    assert read_status(archive.instance, "archiver").counters["trades_lost"] == 0
    archive.kill()
    write_trades(w, 50, 1000)  # laps the stopped archiver: the newest 63 remain readable
    archive.start()
    wait_for(lambda: archive.cursor("trades.t.0") == 1050, what="the archiver to go on")
    w.close()
    archive.stop()
    totals = archive.journal()["totals"]
    # The slot the writer fills next is never read: the oldest readable record is w - 64 + 1.
    oldest = 1050 - 64 + 1
    assert totals["trades_lost"] == oldest - 50
    ids = sorted(archived_trade_ids(archive.root))
    assert ids == list(range(50)) + list(range(oldest, 1050))


def book_writer(instance: str) -> RingWriter:
    return RingWriter.create(
        instance, "books.t.0", "book", symbols=SYMBOLS, capacity=1 << 14, depth=20, exchange=VENUE
    )


def write_books(w: RingWriter, n: int, step_ns: int, first: int = 0) -> list[tuple[int, int]]:
    """n books of BTCUSDT every step_ns of exchange time; (exchange ts, last update id) each."""
    out = []
    for i in range(first, first + n):
        ts = T0 + i * step_ns
        w.bids[:, 0] = 100.0 - np.arange(20) * 0.1 - i * 1e-3
        w.bids[:, 1] = 1.0 + i
        w.asks[:, 0] = 100.1 + np.arange(20) * 0.1
        w.asks[:, 1] = 2.0 + i
        w.commit_book(0, L.FLAG_SYNCED, ts, ts + 1000, 10 * i + 1, 10 * i + 10, 10 * i, 20, 20)
        out.append((ts, 10 * i + 10))
    return out


def test_books_follow_the_cadence_and_depth(archive: Archiver) -> None:
    archive.settings = ("history.book_interval_ms=100", f"history.book_depth={DEPTH}")
    w = book_writer(archive.instance)
    archive.start()
    sent = write_books(w, 500, 7_000_000)  # every 7 ms
    wait_for(lambda: archive.cursor("books.t.0") == 500, what="half the books")
    archive.kill()  # the cadence state is committed with the files: no slot twice after it
    sent += write_books(w, 500, 7_000_000, first=500)
    archive.start()
    wait_for(lambda: archive.cursor("books.t.0") == 1000, what="every book read")
    w.close()
    archive.stop()
    got = history.books("BTCUSDT", root=archive.root, as_="numpy")
    expected, last_slot = [], -1
    for ts, uid in sent:
        if ts // 100_000_000 > last_slot:
            last_slot = ts // 100_000_000
            expected.append(uid)
    assert got["last_update_id"].tolist() == expected
    assert got["bid_price"].shape == (len(expected), DEPTH)
    assert got["bid_count"].max() == DEPTH
    i = 0  # the first book archived is sent[0]: levels kept exactly
    assert got["bid_price"][i].tolist() == pytest.approx((100.0 - np.arange(DEPTH) * 0.1).tolist())
    totals = archive.journal()["totals"]
    assert totals["books_archived"] == len(expected)
    assert totals["books_skipped"] == 1000 - len(expected)


# ----- queries ----------------------------------------------------------------------------


@pytest.fixture
def archived(archive: Archiver) -> Archiver:
    """An archive holding 2000 trades (in at least two files per symbol) and 200 books."""
    tw, bw = trade_writer(archive.instance), book_writer(archive.instance)
    archive.start()
    write_trades(tw, 0, 1000)
    wait_for(lambda: archive.cursor("trades.t.0") == 1000)
    write_trades(tw, 1000, 1000)
    write_books(bw, 200, 10_000_000)
    wait_for(lambda: archive.cursor("trades.t.0") == 2000 and archive.cursor("books.t.0") == 200)
    tw.close()
    bw.close()
    archive.stop()
    return archive


def mdpipe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mdpipe.cli", *args], cwd=REPO, capture_output=True, text=True
    )


def test_query_api_and_command_line(archived: Archiver) -> None:
    root = archived.root
    start, end = T0 + 100 * 1_000_000, T0 + 200 * 1_000_000
    t = history.trades("BTCUSDT", start, end, root=root)
    assert t.column("trade_id").to_pylist() == list(range(100, 200, 2))
    assert set(t.column("venue").to_pylist()) == {VENUE}
    few = history.trades("BTCUSDT", start, end, root=root, columns=["price", "side"])
    assert few.column_names == ["ts", "price", "side", "symbol", "venue"]
    assert few.column("price").equals(t.column("price"))
    with pytest.raises(HistoryError, match=r"columns: \['bid'\] unknown"):
        history.trades("BTCUSDT", root=root, columns=["bid"])
    arr = history.trades("ETHUSDT", root=root, venue=VENUE, as_="numpy")
    assert arr["trade_id"].tolist() == list(range(1, 2000, 2))
    assert np.all(np.diff(arr["ts"].astype(np.int64)) > 0)
    out = mdpipe("history", "trades", "BTCUSDT", "--dir", str(root), "--format", "csv")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith('"ts"') and len(lines) == 1 + 1000
    out = mdpipe("history", "books", "BTCUSDT", "--dir", str(root), "--limit", "3")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 4, out
    pq_out = root.parent / "out.parquet"
    out = mdpipe(
        "history", "books", "BTCUSDT", "--dir", str(root), "--format", "parquet", "-o", str(pq_out)
    )
    assert out.returncode == 0, out.stderr
    assert pq.read_table(pq_out).num_rows == 200


def test_query_bad_input_is_one_clear_message(archived: Archiver) -> None:
    root = archived.root
    with pytest.raises(HistoryError, match="unknown symbol 'NOPE'.*BTCUSDT, ETHUSDT"):
        history.trades("NOPE", root=root)
    with pytest.raises(HistoryError, match="empty range"):
        history.trades("BTCUSDT", "2026-12-02", "2026-12-01T00:00", root=root)
    with pytest.raises(HistoryError, match="unknown venue 'okx'"):
        history.trades("BTCUSDT", root=root, venue="okx")
    with pytest.raises(HistoryError, match="not a time"):
        history.trades("BTCUSDT", "yesterday-ish", root=root)
    for args, needle in [
        (["trades", "NOPE"], "unknown symbol 'NOPE'"),
        (["trades", "BTCUSDT", "--from", "2026-12-02", "--to", "2026-12-01"], "empty range"),
        (["trades", "BTCUSDT", "--format", "parquet"], "--format parquet needs --output"),
    ]:
        out = mdpipe("history", *args, "--dir", str(root))
        assert out.returncode == 1, out
        assert needle in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    out = mdpipe(
        "history",
        "trades",
        "BTCUSDT",
        "--dir",
        str(root),
        "--from",
        "2020-01-01",
        "--to",
        "2020-01-02",
    )
    assert out.returncode == 0 and "no trades of BTCUSDT in that range" in out.stderr


def test_a_corrupt_file_is_skipped_and_named(archived: Archiver) -> None:
    root = archived.root
    files = sorted(root.glob("trades/venue=*/symbol=BTCUSDT/date=*/*.parquet"))
    assert len(files) >= 2
    victim = files[0]
    bad_rows = history.trades("BTCUSDT", root=root).num_rows
    n_victim = pq.read_metadata(victim).num_rows
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # torn
    with pytest.warns(HistoryWarning, match=str(victim)):
        t = history.trades("BTCUSDT", root=root)
    assert t.num_rows == bad_rows - n_victim
    out = mdpipe("history", "trades", "BTCUSDT", "--dir", str(root), "--format", "csv")
    assert out.returncode == 0
    assert f"skipped {victim}" in out.stderr and "Traceback" not in out.stderr
    # Garbage that ends like Parquet (a valid-looking footer) is caught when DuckDB reads it.
    files[1].write_bytes(b"PAR1" + os.urandom(2000) + files[1].read_bytes()[-200:])
    with pytest.warns(HistoryWarning):
        history.trades("BTCUSDT", root=root)


# ----- replay -----------------------------------------------------------------------------


def test_replay_writes_archived_records_into_rings(archived: Archiver, instance: str) -> None:
    target = f"{instance}r"
    try:
        out = mdpipe("replay", "--dir", str(archived.root), "--max", "--instance", target)
        assert out.returncode == 0, out.stderr
        books = attach(target, "books")
        books.seek_oldest()
        got = books.read_batch(10_000)
        want = history.books("BTCUSDT", root=archived.root, as_="numpy")
        assert got["last_update_id"].tolist() == want["last_update_id"].tolist()
        assert got["exchange_ts_ns"].tolist() == want["exchange_ts_ns"].tolist()
        assert np.all(got["flags"] & L.FLAG_REPLAYED)
        assert np.array_equal(got["bids"][:, :, 0], want["bid_price"])
        trades = attach(target, "trades")
        trades.seek_oldest()
        t = trades.read_batch(10_000)
        assert t["trade_id"].tolist() == list(range(2000))  # time order across symbols
        assert trades.symbols == SYMBOLS
        books.close()
        trades.close()
        # The example strategy runs unchanged on the replayed rings.
        out = subprocess.run(
            [sys.executable, "readers/strategy_example.py", "--instance", target, "--replay"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.splitlines()[-1])
        assert summary["records"] == summary["replayed_records"] == len(want)
        assert summary["lost"] == 0 and summary["trade_volume"] == pytest.approx(1000 * 0.5)
    finally:
        remove_segments(target)


def test_finished_days_are_compacted_into_one_file(archived: Archiver) -> None:
    root = archived.root
    before = {s: history.trades(s, root=root) for s in SYMBOLS}
    assert len(list(root.glob("trades/venue=*/symbol=BTCUSDT/date=*/*.parquet"))) >= 2
    archived.start()  # its first flush looks for finished days (T0's day is before today)
    wait_for(lambda: archived.journal().get("replaces"), what="a compaction")
    archived.stop()
    for kind in ("trades", "books"):
        for day_dir in root.glob(f"{kind}/venue=*/symbol=*/date=*"):
            files = list(day_dir.glob("*.parquet"))
            assert len(files) == 1, files  # merged ("day-...") or alone from the start
    for s in SYMBOLS:
        assert history.trades(s, root=root).equals(before[s])
    assert archived.journal()["totals"]["days_compacted"] >= 2  # BTCUSDT and ETHUSDT trades


def test_history_keep_days_deletes_older_days(archived: Archiver) -> None:
    from datetime import date

    from mdpipe.history.store import expire

    root = archived.root
    days = {p.name for p in root.glob("*/venue=*/symbol=*/date=*")}
    assert days == {"date=2026-11-30"}
    assert expire(root, 0) == []
    assert expire(root, 3, today=date(2026, 12, 2)) == []  # 2 days old: kept
    partitions = len(list(root.glob("*/venue=*/symbol=*")))
    removed = expire(root, 2, today=date(2026, 12, 2))
    assert len(removed) == partitions >= 3
    assert not list(root.glob("*/venue=*"))  # emptied symbol and venue directories go too
    with pytest.raises(HistoryError, match="unknown symbol"):
        history.trades("BTCUSDT", root=root)
