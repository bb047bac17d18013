"""The ingest process as the supervisor runs it: arguments, refusals, pinning, clean stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import refused_port
from test_ingest_support import (
    CORE,
    IngestProcess,
    RecordLog,
    synced_in_ring,
    write_config,
    write_sim_config,
)

from mdpipe.shm.segment import read_status
from mdpipe.sim.process import SimProcess


def _offline_config(tmp_path: Path, instance: str) -> Path:
    """A config whose exchange is not there: the process runs and keeps retrying."""
    port = refused_port()
    return write_config(
        tmp_path / "ingest.toml",
        instance,
        ws_url=f"ws://127.0.0.1:{port}",
        rest_url=f"http://127.0.0.1:{port}",
        market="futures",
        symbols=["BTCUSDT", "ETHUSDT"],
    )


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mdpipe.ingest", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_unknown_shard_and_bad_config_are_one_line_errors(tmp_path: Path, instance: str) -> None:
    cfg = _offline_config(tmp_path, instance)
    r = _run("--config", str(cfg), "--feed", "f", "--shard", "3")
    assert r.returncode == 2
    assert r.stderr.strip() == "mdpipe ingest: no shard f/3 in the config (have: f/0)"
    r = _run("--config", str(cfg), "--set", "shm.depth=0", "--feed", "f", "--shard", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "shm.depth" in r.stderr


def test_offline_exchange_keeps_retrying_and_a_second_writer_is_refused(
    tmp_path: Path, instance: str
) -> None:
    cfg = _offline_config(tmp_path, instance)
    with IngestProcess(cfg, instance) as ingest:
        ingest.wait_running()
        ingest.wait_for(  # both routes, retried with backoff
            "four refused connections", lambda _: ingest.log().count("cannot connect") >= 4
        )
        c = ingest.counters()
        assert c["g_connections"] == 0 and c["g_books_synced"] == 0 and c["g_books_total"] == 2
        assert c["g_core"] == CORE and c["g_pinned"] == 1
        # Idle rings still show a live writer: their heartbeats keep moving.
        for ring in (ingest.books_ring, ingest.trades_ring):
            beat = read_status(instance, ring).heartbeat_ns
            ingest.wait_for(
                f"a newer heartbeat of {ring}",
                lambda _, ring=ring, beat=beat: read_status(instance, ring).heartbeat_ns > beat,
            )
        r = _run("--config", str(cfg), "--feed", "f", "--shard", "0")
        assert r.returncode == 1 and "written by live process" in r.stderr
        # The refused second process did not disturb the running one.
        assert ingest.proc.poll() is None
        assert read_status(instance, "books.f.0").writer_pid == ingest.proc.pid
        assert ingest.stop() == 0


def test_process_is_pinned_to_its_core(tmp_path: Path, instance: str) -> None:
    cfg = _offline_config(tmp_path, instance)
    with IngestProcess(cfg, instance) as ingest:
        ingest.wait_running()
        assert os.sched_getaffinity(ingest.proc.pid) == {CORE}
        # Helper threads (handshakes, snapshots) share the core.
        for tid in os.listdir(f"/proc/{ingest.proc.pid}/task"):
            assert os.sched_getaffinity(int(tid)) == {CORE}
        assert ingest.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_marks_books_stale(
    tmp_path: Path, instance: str, sig: signal.Signals
) -> None:
    with SimProcess(
        ["--market", "futures", "--symbols", "BTCUSDT,ETHUSDT", "--rate", "500"]
    ) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market="futures",
            symbols=["BTCUSDT", "ETHUSDT"],
        )
        with IngestProcess(cfg, instance) as ingest:
            books = RecordLog(instance, ingest.books_ring, "book")
            # Synced in the ring too: the gauge counts a book a moment before its first record.
            ingest.wait_for(
                "synced books", lambda c: c["g_books_synced"] == 2 and synced_in_ring(books) == 2
            )
            assert books.reader.top("BTCUSDT") is not None
            ingest.proc.send_signal(sig)
            assert ingest.proc.wait(10) == 0
            assert f"{sig.name} received: stopping" in ingest.log()
            # Segments stay (the supervisor removes them); the writer is marked gone and the
            # last record of every book says it is no longer exact.
            status = read_status(instance, ingest.books_ring)
            assert status.writer_pid == 0 and not status.writer_alive
            assert status.counters["g_connections"] == 0
            assert read_status(instance, ingest.trades_ring).writer_pid == 0
            assert books.reader.top("BTCUSDT") is None and books.reader.top("ETHUSDT") is None
            last = {int(r["symbol_id"]): int(r["flags"]) for r in books.drain()}
            assert last == {0: 0, 1: 0}
            books.close()


def test_restart_continues_the_same_segments(tmp_path: Path, instance: str) -> None:
    cfg = _offline_config(tmp_path, instance)
    with IngestProcess(cfg, instance) as first:
        first.wait_running()
        assert first.stop() == 0
    gen = read_status(instance, "books.f.0")
    with IngestProcess(cfg, instance) as second:
        second.wait_running()
        again = read_status(instance, "books.f.0")
        assert again.writer_pid == second.proc.pid and again.writer_alive
        assert again.symbols == gen.symbols == ["BTCUSDT", "ETHUSDT"]
        assert again.exchange == "binance-futures" and again.depth == 20
        assert again.generation == gen.generation + 1
        assert second.stop() == 0


def test_server_pings_are_answered(tmp_path: Path, instance: str) -> None:
    """The server pings every 0.2 s and drops a client whose pong is 2 s late.

    (A shorter timeout would also drop a client that a loaded machine left unscheduled.)
    """
    args = ["--market", "futures", "--symbols", "BTCUSDT", "--rate", "100"]
    with SimProcess([*args, "--ping-interval", "0.2s", "--ping-timeout", "2s"]) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market="futures",
            symbols=["BTCUSDT"],
        )
        with IngestProcess(cfg, instance) as ingest:
            ingest.wait_for("a synced book", lambda c: c["g_books_synced"] == 1)
            time.sleep(4.5)  # twenty pings: one left unanswered would have dropped it
            c = ingest.counters()
            closed = sim.stats()["connections"]["closed"]
            assert c["reconnects"] == 0 and "ping_timeout" not in closed, (closed, c)
            assert ingest.stop() == 0
