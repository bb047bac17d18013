"""The CLI on rings written by this test process: help, stats tables, tail frames, the lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import unique_instance

from mdpipe.runtime import RuntimeStateError
from mdpipe.shm import layout as L
from mdpipe.shm.segment import process_start_ticks
from mdpipe.shm.writer import RingWriter
from mdpipe.supervisor import (
    AlreadyRunningError,
    InstanceLock,
    lock_path,
    read_lock,
    running_instances,
)

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
            {
                "instance": instance,
                "pid": os.getpid(),
                "start_ticks": process_start_ticks(os.getpid()),
                "children": {},
            }
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


# ----- one error style ---------------------------------------------------------------------


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_every_command_fails_in_one_style(tmp_path: Path) -> None:
    """`mdpipe <command>: <message>`, one line on stderr, exit 2 for usage/config, 1 for state."""
    busy, port = _busy_port()
    missing = unique_instance()
    cases = [
        (["stats", "--instance", ""], 2, "mdpipe stats: "),
        (["tail", "BTCUSDT", "--instance", ""], 2, "mdpipe tail: "),
        (["stop", "--instance", ""], 2, "mdpipe stop: "),
        (["start", "--instance", ""], 2, "mdpipe start: "),
        (["stats", "--watch", "soon"], 2, "mdpipe stats: "),
        (["frobnicate"], 2, "mdpipe: "),
        (["start", "--config", "/dev/zero"], 2, "mdpipe start: config file /dev/zero: "),
        (["start", "--set", "shm.depth=0"], 2, "mdpipe start: shm.depth: "),
        (["sim", "--tape", str(tmp_path / "none.jsonl.zst")], 2, "mdpipe sim: "),
        (["stats", "--instance", missing], 1, f"mdpipe stats: no mdpipe instance {missing!r}"),
        (["tail", "BTCUSDT", "--instance", missing], 1, "mdpipe tail: no mdpipe instance"),
        (["stop", "--instance", missing], 1, f"mdpipe stop: instance {missing!r} is not running"),
        (["sim", "--port", str(port)], 1, "mdpipe sim: cannot listen on 127.0.0.1:"),
    ]
    try:
        for args, code, prefix in cases:
            res = mdpipe(*args)
            lines = res.stderr.strip().splitlines()
            assert res.returncode == code, (args, res.returncode, res.stderr)
            assert len(lines) == 1, (args, res.stderr)
            assert lines[0].startswith(prefix), (args, lines[0])
            assert "Traceback" not in res.stderr and "Error:" not in res.stderr, res.stderr
    finally:
        busy.close()


def test_stats_and_tail_refuse_a_planted_segment_in_one_line(instance: str) -> None:
    """A segment that is not one of ours is never shown, and costs no traceback."""
    planted = Path(f"/dev/shm/mdpipe.{instance}.books.x.0")
    planted.write_bytes(os.urandom(8192))
    try:
        for args in (["stats"], ["stats", "--json"], ["tail", "BTCUSDT", "--once"]):
            res = mdpipe(*args, "--instance", instance)
            assert res.returncode == 1, res
            assert res.stdout == ""
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"mdpipe {args[0]}: "), res.stderr
    finally:
        planted.unlink(missing_ok=True)


def test_stats_piped_into_head_is_quiet(instance: str, rings) -> None:
    res = subprocess.run(
        f"{sys.executable} -m mdpipe.cli stats --instance {instance} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 1
    assert res.stderr == "", res.stderr


# ----- the lock file: ours or refused ------------------------------------------------------


def test_runtime_dir_is_private_and_ours(tmp_path: Path) -> None:
    """The lock directory must be a real 0700 directory of ours, else every command refuses."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "private")
    (tmp_path / "private").mkdir(mode=0o700)
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    for where, why in ((shared, "mode 1777"), (link, "a symlink"), (foreign, "uid 65534")):
        res = subprocess.run(
            [sys.executable, "-m", "mdpipe.cli", "stop", "--instance", "x"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env={**os.environ, "MDPIPE_RUNTIME_DIR": str(where)},
        )
        assert res.returncode == 1, res.stderr
        line = res.stderr.strip()
        assert line.startswith(f"mdpipe stop: runtime directory {where} is "), line
        assert why in line and "\n" not in line
    # A fresh one is created 0700.
    fresh = tmp_path / "fresh"
    os.environ["MDPIPE_RUNTIME_DIR"] = str(fresh)
    try:
        assert lock_path("x") == fresh / "mdpipe.x.lock"
        assert (fresh.stat().st_mode & 0o777) == 0o700
    finally:
        del os.environ["MDPIPE_RUNTIME_DIR"]


def test_a_runtime_dir_in_the_environment_that_is_not_ours_is_not_used(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    os.chown(xdg, 65534, 65534)
    env = {k: v for k, v in os.environ.items() if k != "MDPIPE_RUNTIME_DIR"}
    env["XDG_RUNTIME_DIR"] = str(xdg)
    code = "from mdpipe.runtime import runtime_dir; print(runtime_dir())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    assert not out.startswith(str(xdg))
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    env["XDG_RUNTIME_DIR"] = str(own)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    assert out == str(own / "mdpipe")


def test_a_planted_lock_symlink_is_never_followed(instance: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    path = lock_path(instance)
    path.symlink_to(victim)
    try:
        with pytest.raises(RuntimeStateError, match="a symlink"):
            InstanceLock(instance).acquire()
        with pytest.raises(RuntimeStateError, match="a symlink"):
            read_lock(instance)
        res = mdpipe("stop", "--instance", instance)
        assert res.returncode == 1 and "\n" not in res.stderr.strip(), res.stderr
        assert res.stderr.startswith(f"mdpipe stop: {path} is a symlink"), res.stderr
    finally:
        path.unlink()
    assert victim.read_text() == "precious\n"


def test_a_lock_file_of_another_user_is_refused(instance: str) -> None:
    path = lock_path(instance)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o666)
    os.write(fd, b'{"pid": 1, "start_ticks": 1, "children": {}}')
    os.fchown(fd, 65534, 65534)
    os.close(fd)
    try:
        with pytest.raises(RuntimeStateError, match="owned by uid 65534"):
            InstanceLock(instance).acquire()
        with pytest.raises(RuntimeStateError, match="owned by uid 65534"):
            read_lock(instance)
        assert path.read_bytes().startswith(b'{"pid": 1')  # neither truncated nor rewritten
    finally:
        path.unlink()


def test_stop_signals_only_a_verified_supervisor(instance: str) -> None:
    """A record naming an innocent process, even in a held lock file, gets no signal."""
    innocent = subprocess.Popen(["sleep", "300"])
    holder = None
    try:
        ticks = process_start_ticks(innocent.pid)
        record = {"instance": instance, "pid": innocent.pid, "start_ticks": ticks, "children": {}}
        path = lock_path(instance)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        os.write(fd, json.dumps(record).encode())
        os.close(fd)
        # 1. Nobody holds the lock: a leftover file.
        assert read_lock(instance) is None
        assert mdpipe("stop", "--instance", instance).returncode == 1
        # 2. Another process holds it, but the record names the innocent one.
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout.readline().strip() == "locked"
        assert read_lock(instance) is None
        res = mdpipe("stop", "--instance", instance, "--timeout", "1")
        assert res.returncode == 1 and "is not running" in res.stderr, res.stderr
        assert innocent.poll() is None and holder.poll() is None
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        innocent.kill()
        innocent.wait()
        lock_path(instance).unlink(missing_ok=True)


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(300)
"""


def test_tail_shows_mark_price_and_funding(instance: str, rings) -> None:
    from mdpipe.ingest.tickers import TickerState
    from mdpipe.venues.base import MarkPrice

    w = RingWriter.create(instance, "tickers.x.0", "ticker", symbols=["BTCUSDT", "ETHUSDT"])
    try:
        now = time.time_ns()
        due = (now // 3_600_000_000_000 + 2) * 3_600_000_000_000  # a whole hour, 1-2 h away
        values = {"mark_price": 100.125, "funding_rate": 0.0001, "next_funding_ts_ns": due}
        TickerState(w, 2).apply(0, MarkPrice("BTCUSDT", now // 1_000_000, 100.125, values), now)
        res = mdpipe("tail", "BTCUSDT", "--instance", instance, "--once")
        assert res.returncode == 0, res.stderr
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith("mark "))
        assert line.startswith("mark 100.125  funding +0.0100% next ")
        assert time.strftime("%H:00:00 UTC", time.gmtime(due / 1e9)) in line
        assert "index" not in line and "OI" not in line  # not sent: not shown
        eth = mdpipe("tail", "ETHUSDT", "--instance", instance, "--once")
        assert "mark " not in eth.stdout  # no ticker yet for ETHUSDT
    finally:
        w.close(unlink=True)
