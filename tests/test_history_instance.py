"""The archiver as a child of `mdpipe start` on the simulator: every trade, ticker and candle
record the rings carried reaches Parquet exactly once, every field as committed, across a
kill -9 of the archiver and an instance restart; stats and /metrics show it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import posix_ipc
import pytest
from click.testing import CliRunner
from conftest import REPO, RedisServer, free_port

from mdpipe import history
from mdpipe.cli import main as cli_main
from mdpipe.history import schema
from mdpipe.readers import LayoutError, NoSuchRingError, Reader, attach
from mdpipe.shm.segment import read_status


def start(instance: str, root: Path, redis_url: str, http_port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "mdpipe.cli", "start", "--config", "config/demo.toml"]
    for kv in (
        f"instance={instance}",
        f"redis.url={redis_url}",
        f"sim.port={free_port()}",
        f"http.port={http_port}",
        "history.enabled=true",
        f"history.dir={root}",
        "history.flush_interval=0.2",
    ):
        argv += ["--set", kv]
    # Its log goes to a file: a pipe nobody reads until the end would stall a chatty run.
    with open(root.parent / f"{instance}.log", "ab") as log:
        return subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


RINGS = {  # ring -> (query kind, candle interval)
    "tickers.sim.0": ("tickers", None),
    "candles_1s.sim.0": ("candles", "1s"),
    "candles_1m.sim.0": ("candles", "1m"),
}


def collect(reader: Reader, seen: list[tuple[int, int, int]]) -> None:
    for r in reader.read_batch(1 << 16):
        seen.append((int(r["symbol_id"]), int(r["trade_id"]), int(r["recv_ts_ns"])))


def drain(reader: Reader, out: list[np.ndarray]) -> None:
    while len(batch := reader.read_batch(1 << 16)):
        out.append(batch)


def wait_attach(instance: str, ring: str, deadline: float) -> Reader:
    while True:
        try:
            reader = attach(instance, ring)
        except (NoSuchRingError, LayoutError):  # not there yet, or its header half written
            assert time.monotonic() < deadline, f"no ring {ring}"
            time.sleep(0.05)
            continue
        reader.seek_oldest()
        return reader


def archiver_pid(instance: str) -> int:
    try:
        st = read_status(instance, "archiver")
    except (posix_ipc.ExistentialError, LayoutError):
        return 0
    return st.writer_pid if st.writer_alive else 0


def run_once(
    instance: str,
    root: Path,
    redis_url: str,
    names: dict[int, str],
    derived: dict[str, list[np.ndarray]],
    *,
    kill_archiver: bool,
) -> list[tuple[str, int, int]]:
    """One instance run until it archived some trades, tickers and candles (the archiver
    killed with SIGKILL once on the way when kill_archiver); the trades its ring carried,
    and in `derived` every ticker and candle record its rings carried (symbol ids as names)."""
    port = free_port()
    proc = start(instance, root, redis_url, port)
    seen: list[tuple[int, int, int]] = []
    got: dict[str, list[np.ndarray]] = {ring: [] for ring in RINGS}
    try:
        deadline = time.monotonic() + 90
        reader = wait_attach(instance, "trades.sim.0", deadline)
        others = {ring: wait_attach(instance, ring, deadline) for ring in RINGS}
        if kill_archiver:
            # After it committed tickers and candles: they must neither repeat nor go missing.
            journal = root / "_archiver" / f"{instance}.json"

            def committed() -> bool:
                try:
                    rings = json.loads(journal.read_text())["rings"]
                except (FileNotFoundError, ValueError, KeyError):
                    return False
                return all(rings.get(r, {}).get("cursor", 0) > 0 for r in RINGS if "1m" not in r)

            while not committed():
                assert time.monotonic() < deadline, "the archiver committed no tickers or candles"
                time.sleep(0.05)
            pid = archiver_pid(instance)
            os.kill(pid, signal.SIGKILL)
            while archiver_pid(instance) in (0, pid):  # the supervisor restarts it
                assert time.monotonic() < deadline, "the archiver was not restarted"
                time.sleep(0.05)
        while True:
            collect(reader, seen)
            for ring, r in others.items():
                drain(r, got[ring])
            enough = len(seen) >= 100 and sum(map(len, got["candles_1s.sim.0"])) >= 3
            if enough and sum(map(len, got["tickers.sim.0"])) >= 3:
                break
            assert time.monotonic() < deadline, "too few trades, tickers or candles"
            time.sleep(0.05)
        out = CliRunner().invoke(cli_main, ["stats", "--instance", instance])  # in-process
        assert "ARCHIVER" in out.stdout and "TICKERS" in out.stdout, out.output
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "mdpipe_archiver_trades_archived_total" in text
        assert "mdpipe_archiver_tickers_archived_total" in text
        assert "mdpipe_archiver_candles_archived_total" in text
        assert "mdpipe_archiver_bytes_written_total" in text
        names.update(enumerate(reader.symbols))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    log = (root.parent / f"{instance}.log").read_text(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    collect(reader, seen)  # what the ingest committed until it stopped (mapping outlives unlink)
    reader.close()
    for ring, r in others.items():
        drain(r, got[ring])  # candles still open at the stop are published then (OPEN)
        assert r.lost == 0, ring
        recs = np.concatenate(got[ring]) if got[ring] else np.empty(0, r.dtype)
        sym = np.array(r.symbols, dtype=object)[recs["symbol_id"]]
        derived.setdefault(ring, []).append((sym, recs))
        r.close()
    return [(names[s], t, r) for s, t, r in seen]


def assert_archived_exactly(root: Path, ring: str, runs: list) -> int:
    """Every record of ring (both runs) is in the archive once, every field as committed."""
    kind, interval = RINGS[ring]
    sent = {}
    for syms, recs in runs:
        for sym, rec in zip(syms, recs, strict=True):
            key = (sym, int(rec["commit_ts_ns"]), int(rec["symbol_seq"]))
            assert key not in sent
            sent[key] = rec
    columns = [c for c in schema.COLUMNS[kind]]
    archived = {}
    for sym in sorted({k[0] for k in sent}):
        options = {"interval": interval, "revisions": True} if interval else {}
        got = getattr(history, kind)(sym, root=root, as_="numpy", **options)
        for row in got:
            key = (sym, int(row["commit_ts_ns"]), int(row["symbol_seq"]))
            assert key not in archived, f"{ring}: {key} archived twice"
            archived[key] = row
    assert sorted(archived) == sorted(sent), ring  # nothing lost, nothing twice
    for key, row in archived.items():
        want = sent[key]
        for c in columns:  # what the venue sent, as the ring carried it (NaN where unsent)
            np.testing.assert_array_equal(row[c], want[c], err_msg=f"{ring} {key} {c}")
    return len(archived)


def test_every_record_reaches_parquet_once_across_kill_9_and_an_instance_restart(
    tmp_path: Path, instance: str, redis_server: RedisServer
) -> None:
    root = tmp_path / "history"
    names: dict[int, str] = {}
    derived: dict[str, list] = {}
    seen = run_once(instance, root, redis_server.url, names, derived, kill_archiver=True)
    seen += run_once(instance, root, redis_server.url, names, derived, kill_archiver=False)
    archived = []
    for sym in sorted({s for s, _, _ in seen}):
        t = history.trades(sym, root=root)
        archived += zip(
            [sym] * t.num_rows,
            t.column("trade_id").to_pylist(),
            t.column("recv_ts_ns").to_pylist(),
            strict=True,
        )
    assert len(archived) == len(set(archived))  # nothing twice
    assert sorted(archived) == sorted(seen)  # nothing lost
    counts = {ring: assert_archived_exactly(root, ring, derived[ring]) for ring in RINGS}
    assert counts["tickers.sim.0"] >= 6 and counts["candles_1s.sim.0"] >= 6, counts
    assert counts["candles_1m.sim.0"] >= 2, counts  # at least the candles open at each stop


def test_start_replays_a_tape_through_its_simulator(tapes: Path) -> None:
    """`[sim] tape` runs `mdpipe sim --tape` with the speed settings, not synthetic options."""
    from mdpipe import config
    from mdpipe.supervisor import child_specs
    from mdpipe.venues import make_venue

    tape = tapes / "usdm_btcusdt_20240808.gz"
    cfg = config.load(
        str(REPO / "config/demo.toml"),
        overrides=[f"sim.tape={tape}", "sim.speed=4", "sim.loop=true"],
    )
    argv = next(s.argv for s in child_specs(cfg, None, []) if s.name == "sim")
    assert argv[argv.index("--tape") + 1] == str(tape)
    assert argv[argv.index("--speed") + 1] == "4.0" and "--loop" in argv
    assert "--symbols" not in argv and "--rate" not in argv
    # It waits for every connection the shard plans: /public, /market and the tickers route.
    feed = cfg.feeds[0]
    assert argv[argv.index("--start-clients") + 1] == str(
        len(make_venue(feed, feed.symbols).plan())
    )
    with pytest.raises(config.ConfigError, match="sim.tape: 'nope.gz' is not a file"):
        config.load(str(REPO / "config/demo.toml"), overrides=["sim.tape=nope.gz"])
