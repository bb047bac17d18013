"""End to end: `mdpipe start` on the simulator, a reader process and Redis both get data, stop."""

from __future__ import annotations

import json
import subprocess

import orjson
import redis
from conftest import RedisServer
from prometheus_client.parser import text_string_to_metric_families
from test_supervisor import PY, REPO, Running, gone, mdpipe, poll

from mdpipe.shm.segment import list_segments
from mdpipe.supervisor import lock_path

STRATEGY = REPO / "readers" / "strategy_example.py"
PASSWORD = "s3cret-pw"


def test_start_read_publish_observe_stop(instance, tmp_path) -> None:
    server = RedisServer(tmp_path, password=PASSWORD)
    server.start()
    run = Running(
        instance,
        server.url,
        tmp_path,
        extra=["--log-format", "json"],
        env={"MDPIPE_REDIS_PASSWORD": PASSWORD},
    )
    sub = redis.Redis.from_url(server.url, password=PASSWORD)
    pubsub = sub.pubsub()
    pubsub.psubscribe("orderbook:*", "trades:*")
    try:
        run.start().wait_ready()

        # A local strategy in its own process reads the rings.
        res = subprocess.run(
            [PY, str(STRATEGY), "--instance", instance, "--seconds", "2", "--symbol", "BTCUSDT"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout.strip().splitlines()[-1])
        assert report["records"] > 0 and report["lost"] == 0
        assert report["top"]["bid"] < report["top"]["ask"]

        # A Redis subscriber gets books and trades.
        seen: dict[str, dict] = {}

        def got_both() -> bool:
            msg = pubsub.get_message(timeout=0.2)
            if msg and msg["type"] == "pmessage":
                seen.setdefault(msg["channel"].decode().split(":")[0], orjson.loads(msg["data"]))
            return {"orderbook", "trades"} <= set(seen)

        poll(got_both, 20, "orderbook and trades messages from Redis", step=0)
        assert seen["orderbook"]["symbol"] in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
        assert seen["orderbook"]["bids"] and seen["orderbook"]["asks"]

        # What stats, tail and /metrics report.
        snap = run.stats()
        assert snap["supervisor"]["children_up"] == 3
        assert {p["name"] for p in snap["processes"]} == {"sim", "ingest.sim.0", "publisher"}
        books = next(r for r in snap["rings"] if r["ring"] == "books.sim.0")
        assert books["messages"] > 0 and books["latency"]["feed_to_ring_us"]["p50"] > 0
        assert snap["publisher"]["redis_up"]
        table = mdpipe("stats", "--instance", instance)
        assert table.returncode == 0 and "books.sim.0" in table.stdout
        tail = mdpipe("tail", "BTCUSDT", "--instance", instance, "--once", "--levels", "3")
        assert tail.returncode == 0, tail.stderr
        assert "synced" in tail.stdout and "spread" in tail.stdout and "TRADES" in tail.stdout
        status, body = run.get("/metrics")
        assert status == 200
        samples = {
            (s.name, s.labels.get("process")): s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
        }
        for proc in ("sim", "ingest.sim.0", "publisher"):
            assert samples[("mdpipe_process_up", proc)] == 1
            assert samples[("mdpipe_process_restarts_total", proc)] == 0
        assert samples[("mdpipe_supervisor_children_up", None)] == 3

        # Stop: nothing left behind.
        pids = run.pids()
        res = run.stop()
        assert res.returncode == 0, res.stderr
        assert run.proc.returncode == 0
        for name, pid in pids.items():
            poll(lambda pid=pid: gone(pid), 10, f"{name} (pid {pid}) to exit")
        assert list_segments(instance) == []
        assert not lock_path(instance).exists()
    finally:
        pubsub.close()
        sub.close()
        run.kill()
        server.stop()

    # Logs are JSON lines and never show the Redis password.
    log = run.log()
    assert PASSWORD not in log
    lines = [ln for ln in log.splitlines() if ln.startswith("{")]
    sup_lines = [json.loads(ln) for ln in lines if '"mdpipe.supervisor"' in ln]
    assert any("starting" in rec["msg"] for rec in sup_lines)
    assert all(rec["level"] in ("info", "warning", "error", "debug") for rec in sup_lines)


def test_stats_without_the_instance_lists_the_running_ones(instance) -> None:
    res = mdpipe("stats", "--instance", instance)
    assert res.returncode == 1
    assert f"no mdpipe instance {instance!r} is running" in res.stderr
    tail = mdpipe("tail", "BTCUSDT", "--instance", instance, "--once")
    assert tail.returncode == 1
    assert f"no mdpipe instance {instance!r}" in tail.stderr


def test_ready_follows_redis_and_stats_watch(instance, redis_server, tmp_path) -> None:
    run = Running(instance, redis_server.url, tmp_path).start()
    try:
        run.wait_ready()
        redis_server.stop()

        def not_ready() -> dict | None:
            status, body = run.get("/ready")
            return json.loads(body) if status == 503 else None

        reasons = poll(not_ready, 15, "/ready to answer 503 without Redis")["reasons"]
        assert any(r.startswith("redis: ") for r in reasons), reasons
        assert run.get("/health")[0] == 200
        redis_server.start()
        run.wait_ready(20)

        proc = subprocess.Popen(
            [PY, "-m", "mdpipe.cli", "stats", "--instance", instance, "--watch", "0.3", "--json"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        # Three snapshots at least, and on until the ring has moved (a loaded machine may
        # leave the feed unscheduled for a few of them).
        snaps = [json.loads(proc.stdout.readline()) for _ in range(3)]
        while snaps[-1]["rings"][0]["messages"] == snaps[0]["rings"][0]["messages"]:
            assert len(snaps) < 100, "the ring never moved"
            snaps.append(json.loads(proc.stdout.readline()))
        proc.terminate()
        proc.wait(10)
        cursors = [s["rings"][0]["messages"] for s in snaps]
        assert cursors == sorted(cursors) and cursors[-1] > cursors[0]
        assert all(s["rings"][0]["rate"] is not None for s in snaps)
        assert run.stop().returncode == 0
    finally:
        run.kill()
