"""Record and replay: a tape recorded from the simulator by `[record]`, replayed through
`mdpipe start` (`[sim] tape`), gives the same book records (update ids and levels)."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import REPO, free_port

from mdpipe import history
from mdpipe.history.query import HistoryError

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def wait_for(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start(instance: str, *settings: str, command: str = "start") -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "mdpipe.cli", command, "--config", "config/demo.toml"]
    for kv in (
        f"instance={instance}",
        "redis.url=redis://127.0.0.1:1/0",  # no Redis: the publisher keeps retrying
        f"sim.port={free_port()}",
        f"http.port={free_port()}",
        "history.enabled=true",
        "history.flush_interval=0.2",
        *settings,
    ):
        argv += ["--set", kv]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()[-3000:]


def synced_books(root: Path, symbol: str) -> np.ndarray:
    try:
        b = history.books(symbol, root=root, as_="numpy")
    except HistoryError:
        return np.empty(0, [("last_update_id", "u8"), ("flags", "u4")])
    return b[b["flags"] != 0]  # not the record that unpublishes the book at shutdown


def test_a_recorded_tape_replays_to_the_same_book_records(tmp_path: Path, instance: str) -> None:
    original, replayed, tapes = tmp_path / "a", tmp_path / "b", tmp_path / "tapes"
    # `mdpipe record` is `mdpipe start` with [record] enabled
    proc = start(instance, f"record.dir={tapes}", f"history.dir={original}", command="record")
    try:
        wait_for(lambda: all(len(synced_books(original, s)) >= 40 for s in SYMBOLS), 120, "books")
    finally:
        stop(proc)
    files = sorted(tapes.rglob("*.gz"))
    assert len(files) == 1 and files[0].parent.parent.name == "sim", files
    assert not list(tapes.rglob("*.part"))
    lines = gzip.decompress(files[0].read_bytes()).splitlines()
    assert all(line.split(b" ", 1)[0].isdigit() for line in lines)
    assert sum(b'{"lastUpdateId"' in line for line in lines) >= len(SYMBOLS)

    want = {s: synced_books(original, s) for s in SYMBOLS}
    proc = start(f"{instance}b", f"sim.tape={files[0]}", f"history.dir={replayed}")
    try:
        last = {s: int(want[s]["last_update_id"][-1]) for s in SYMBOLS}
        wait_for(
            lambda: all(
                last[s] in synced_books(replayed, s)["last_update_id"].tolist() for s in SYMBOLS
            ),
            180,
            "the replay to reach the recorded end",
        )
    finally:
        stop(proc)
    for s in SYMBOLS:
        a, b = want[s], synced_books(replayed, s)
        start_id = max(int(a["last_update_id"][0]), int(b["last_update_id"][0]))
        a = a[a["last_update_id"] >= start_id]
        b = b[b["last_update_id"] >= start_id]
        assert len(a) >= 30, s
        assert a["last_update_id"].tolist() == b["last_update_id"].tolist(), s
        assert a["first_update_id"].tolist() == b["first_update_id"].tolist(), s
        for col in ("bid_price", "bid_qty", "ask_price", "ask_qty", "bid_count", "ask_count"):
            assert np.array_equal(a[col], b[col]), (s, col)
