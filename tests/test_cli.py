"""The CLI on rings written by this test process: help, stats tables, tail frames, the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mdpipe.shm import layout as L
from mdpipe.shm.segment import process_start_ticks
from mdpipe.shm.writer import RingWriter
from mdpipe.supervisor import AlreadyRunningError, InstanceLock, read_lock, running_instances

REPO = Path(__file__).resolve().parent.parent


def mdpipe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mdpipe.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "MDPIPE_INSTANCE"},
    )


@pytest.fixture
def rings(instance: str) -> Iterator[tuple[RingWriter, RingWriter]]:
    """An ingest shard's rings: BTCUSDT synced, ETHUSDT still being built."""
    syms = ["BTCUSDT", "ETHUSDT"]
    counters = ["gaps", "g_books_synced", "g_books_total", "g_connections", "g_core"]
    books = RingWriter.create(
        instance, "books.x.0", "book", symbols=syms, capacity=64, depth=5, counters=counters
    )
    trades = RingWriter.create(instance, "trades.x.0", "trade", symbols=syms, capacity=64)
    books.set("g_books_synced", 1)
    books.set("g_books_total", 2)
    books.set("gaps", 4)
    now = time.time_ns()
    for k in range(5):
        books.bids[k] = (100.0 - k, 1.5 + k)
        books.asks[k] = (100.25 + k, 2.0)
    books.commit_book(0, L.FLAG_SYNCED, now - 1_000_000, now - 10_000, 41, 42, 40, 5, 5)
    books.commit_book(1, 0, now - 1_000_000, now - 10_000, 7, 8, 6, 5, 5)
    for i, (side, price) in enumerate([(1, 100.25), (-1, 100.0), (1, 100.5)]):
        trades.commit_trade(
            0, 0, now, now, now - 5_000, 900 + i, 900 + i, 900 + i, price, 0.1, side
        )
    yield books, trades
    books.close(unlink=True)
    trades.close(unlink=True)


def test_help_lists_every_command() -> None:
    res = mdpipe("--help")
    assert res.returncode == 0
    for name in ("start", "stop", "stats", "tail", "sim"):
        assert f"  {name} " in res.stdout


def test_stats_table_of_rings_without_a_supervisor(instance: str, rings) -> None:
    res = mdpipe("stats", "--instance", instance)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "no supervisor (segments only)" in out
    blocks = out.split("\n\n")
    ring_block = next(b for b in blocks if b.startswith("RING"))
    lines = ring_block.splitlines()
    assert [ln.split()[0] for ln in lines[1:]] == ["books.x.0", "trades.x.0"]
    # Aligned: every row is as long as the header's columns reach, columns start together.
    col = lines[0].index("MESSAGES")
    assert all(ln[col - 1] == " " for ln in lines[1:])
    ingest = next(b for b in blocks if b.startswith("INGEST")).splitlines()
    assert ingest[1].split()[:3] == ["x.0", "0/0", "1/2"]
    snap = json.loads(mdpipe("stats", "--instance", instance, "--json").stdout)
    books = next(r for r in snap["rings"] if r["ring"] == "books.x.0")
    assert books["messages"] == 2 and books["counters"]["gaps"] == 4
    assert books["alive"] and books["writer_pid"] == os.getpid()
    assert books["latency"]["feed_to_ring_us"]["p50"] > 0
    assert snap["processes"][0]["name"] == "ingest.x.0"


def test_tail_once_frames(instance: str, rings) -> None:
    res = mdpipe("tail", "btcusdt", "--instance", instance, "--once", "--levels", "3")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "\x1b[" not in out  # no colour when not on a terminal
    assert "BTCUSDT  books.x.0  synced  update 42 (first 41, prev 40)" in out
    lines = out.splitlines()
    asks = [ln for ln in lines if ln.startswith("ask")]
    bids = [ln for ln in lines if ln.startswith("bid")]
    assert [a.split()[1] for a in asks] == ["102.25", "101.25", "100.25"]  # highest first
    assert [b.split()[1] for b in bids] == ["100.00", "99.00", "98.00"]
    assert lines.index(asks[-1]) < next(i for i, ln in enumerate(lines) if "spread 0.25" in ln)
    tape = lines[lines.index(next(ln for ln in lines if ln.startswith("TRADES"))) + 1 :]
    assert [t.split()[1] for t in tape] == ["BUY", "SELL", "BUY"]  # newest first
    assert tape[0].endswith("id 902")
    eth = mdpipe("tail", "ETHUSDT", "--instance", instance, "--once")
    assert "NOT SYNCED" in eth.stdout and "(none yet)" in eth.stdout
    missing = mdpipe("tail", "DOGEUSDT", "--instance", instance, "--once")
    assert missing.returncode == 1
    assert "DOGEUSDT is not in instance" in missing.stderr and "BTCUSDT, ETHUSDT" in missing.stderr


def test_lock_is_exclusive_and_names_its_holder(instance: str) -> None:
    first = InstanceLock(instance)
    first.acquire()
    try:
        first.write(
            {"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid()), "children": {}}
        )
        assert read_lock(instance)["pid"] == os.getpid()
        assert instance in running_instances()
        with pytest.raises(AlreadyRunningError, match="already running"):
            InstanceLock(instance).acquire()
    finally:
        first.release()
    assert read_lock(instance) is None
    second = InstanceLock(instance)
    second.acquire()  # free again once released
    second.release()
