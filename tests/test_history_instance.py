"""The archiver as a child of `mdpipe start` on the simulator: every trade the rings carried
reaches Parquet exactly once across an instance restart; stats and /metrics show it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, RedisServer, free_port

from mdpipe import history
from mdpipe.readers import NoSuchRingError, Reader, attach


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
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def collect(reader: Reader, seen: list[tuple[int, int, int]]) -> None:
    for r in reader.read_batch(1 << 16):
        seen.append((int(r["symbol_id"]), int(r["trade_id"]), int(r["recv_ts_ns"])))


def run_once(
    instance: str, root: Path, redis_url: str, names: dict[int, str]
) -> list[tuple[str, int, int]]:
    """One instance run until it archived some trades; the trades its ring carried."""
    port = free_port()
    proc = start(instance, root, redis_url, port)
    seen: list[tuple[int, int, int]] = []
    try:
        deadline = time.monotonic() + 90
        reader = None
        while reader is None:
            assert time.monotonic() < deadline, "no trades ring"
            try:
                reader = attach(instance, "trades.sim.0")
            except NoSuchRingError:
                time.sleep(0.05)
        reader.seek_oldest()
        while True:
            collect(reader, seen)
            assert time.monotonic() < deadline, "too few trades archived"
            if len(seen) >= 100:
                break
            time.sleep(0.05)
        out = subprocess.run(
            [sys.executable, "-m", "mdpipe.cli", "stats", "--instance", instance],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert "ARCHIVER" in out.stdout, out
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "mdpipe_archiver_trades_archived_total" in text
        assert "mdpipe_archiver_bytes_written_total" in text
        names.update(enumerate(reader.symbols))
    finally:
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, log.decode()[-3000:]
    collect(reader, seen)  # what the ingest committed until it stopped (mapping outlives unlink)
    reader.close()
    return [(names[s], t, r) for s, t, r in seen]


def test_every_trade_reaches_parquet_once_across_an_instance_restart(
    tmp_path: Path, instance: str, redis_server: RedisServer
) -> None:
    root = tmp_path / "history"
    names: dict[int, str] = {}
    seen = run_once(instance, root, redis_server.url, names)
    seen += run_once(instance, root, redis_server.url, names)
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
