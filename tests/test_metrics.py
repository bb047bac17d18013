"""/metrics, /health and /ready served from real segments and a real redis-server."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

from mdpipe import config as C
from mdpipe.httpserver import HttpServer
from mdpipe.logs import redact
from mdpipe.shm.segment import read_status
from mdpipe.shm.status import StatusWriter
from mdpipe.shm.writer import RingWriter

INGEST_COUNTERS = [
    "frames",
    "gaps",
    "resyncs",
    "parse_errors",
    "reconnects",
    "g_connections",
    "g_connections_expected",
    "g_books_synced",
    "g_books_total",
    "g_core",
]
PUBLISHER_COUNTERS = [
    "books_published",
    "redis_errors",
    "g_redis_up",
    "g_lag_records",
    "g_lag_ns",
    "g_lag_books_f_0",
    "g_lag_trades_f_0",
]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Pipeline:
    """Rings as one ingest shard and the publisher would leave them, written by this process."""

    def __init__(self, instance: str) -> None:
        syms = ["BTCUSDT", "ETHUSDT"]
        self.books = RingWriter.create(
            instance, "books.f.0", "book", symbols=syms, capacity=256, counters=INGEST_COUNTERS
        )
        self.trades = RingWriter.create(instance, "trades.f.0", "trade", symbols=syms, capacity=256)
        self.pub = StatusWriter.create(instance, "publisher", counters=PUBLISHER_COUNTERS)
        for name, value in [
            ("g_connections", 2),
            ("g_connections_expected", 2),
            ("g_books_synced", 2),
            ("g_books_total", 2),
            ("g_core", 1),
            ("frames", 1234),
            ("gaps", 3),
        ]:
            self.books.set(name, value)
        self.pub.set("g_lag_ns", 2_500_000)
        self.pub.set("g_redis_up", 1)
        self.pub.set("g_lag_books_f_0", 7)
        now = time.time_ns()
        for i in range(100):
            self.books.bids[0] = (100.0, 1.0)
            self.books.asks[0] = (100.5, 2.0)
            self.books.commit_book(i % 2, 1, now - 3_000_000, now - 20_000, i + 1, i + 1, i, 1, 1)
            self.trades.commit_trade(i % 2, 0, now, now, now - 5_000, i, i, i, 100.2, 0.1, 1)

    def close(self) -> None:
        for w in (self.books, self.trades, self.pub):
            w.close(unlink=True)


@pytest.fixture
def pipeline(instance: str) -> Iterator[Pipeline]:
    p = Pipeline(instance)
    yield p
    p.close()


@pytest.fixture
def server(instance: str, redis_server, pipeline: Pipeline) -> Iterator[HttpServer]:
    cfg = C.load(
        None,
        overrides=[
            f"instance={instance}",
            "feeds.0.name=f",
            "feeds.0.symbols=BTCUSDT,ETHUSDT",
            "feeds.0.cores=0",
            f"http.port={free_port()}",
            f"redis.url={redis_server.url}",
        ],
        env={},
    )
    srv = HttpServer(cfg)
    srv.start()
    yield srv
    srv.stop()


def test_metrics_parse_and_name_conventions(server: HttpServer, instance: str) -> None:
    status, body = get(server.url + "/metrics")
    assert status == 200
    text = body.decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples
    }
    ring = (("feed", "f"), ("instance", instance), ("kind", "book"), ("ring", "books.f.0"))
    exchange = read_status(instance, "books.f.0").exchange  # the venue and market
    ring = tuple(sorted((*ring, ("shard", "0"), ("exchange", exchange))))
    assert samples[("mdpipe_ring_records_total", ring)] == 100
    assert samples[("mdpipe_ring_writer_up", ring)] == 1
    shard = (("exchange", exchange), ("feed", "f"), ("instance", instance), ("shard", "0"))
    assert samples[("mdpipe_ingest_frames_total", shard)] == 1234
    assert samples[("mdpipe_ingest_gaps_total", shard)] == 3
    assert samples[("mdpipe_ingest_books_synced", shard)] == 2
    assert fams["mdpipe_ingest_gaps"].type == "counter"
    assert fams["mdpipe_ingest_books_synced"].type == "gauge"
    assert samples[("mdpipe_ingest_books", shard)] == 2  # gauge g_books_total
    # Nanosecond gauges are exported in seconds.
    assert samples[("mdpipe_publisher_lag_seconds", (("instance", instance),))] == 0.0025
    assert samples[("mdpipe_publisher_up", (("instance", instance),))] == 1
    lag = (("instance", instance), ("ring", "books.f.0"))
    assert samples[("mdpipe_publisher_ring_lag_records", lag)] == 7
    lat = [s for s in fams["mdpipe_ring_feed_to_ring_latency_seconds"].samples]
    assert {s.labels["percentile"] for s in lat} == {"50", "99", "99.9"}
    assert all(0 < s.value < 1 for s in lat)
    # No per-symbol labels anywhere.
    assert not any("symbol" in s.labels for f in fams.values() for s in f.samples)
    for name in fams:
        assert name.startswith("mdpipe_")
    promtool = shutil.which("promtool")
    if promtool:
        res = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30
        )
        assert res.returncode == 0, res.stdout + res.stderr


def test_health(server: HttpServer, instance: str) -> None:
    status, body = get(server.url + "/health")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "instance": instance}
    assert get(server.url + "/nope")[0] == 404


def wait_status(url: str, want: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(url)
        if status == want:
            return json.loads(body)
        assert time.monotonic() < deadline, f"{url} stayed {status}: {body!r}"
        time.sleep(0.1)


def test_ready_follows_redis_and_books(server: HttpServer, redis_server, pipeline) -> None:
    url = server.url + "/ready"
    assert wait_status(url, 200) == {"ready": True}
    pipeline.books.set("g_books_synced", 1)
    reasons = wait_status(url, 503)["reasons"]
    assert reasons == ["ingest f.0: 1/2 books synced"]
    pipeline.books.set("g_books_synced", 2)
    pipeline.books.set("g_connections", 1)
    assert wait_status(url, 503)["reasons"] == ["ingest f.0: 1/2 connections up"]
    pipeline.books.set("g_connections", 2)
    wait_status(url, 200)
    redis_server.stop()
    reasons = wait_status(url, 503)["reasons"]
    assert len(reasons) == 1 and reasons[0].startswith("redis: redis://127.0.0.1:")
    redis_server.start()
    wait_status(url, 200)


def test_ready_when_nothing_runs(server: HttpServer, pipeline: Pipeline) -> None:
    pipeline.close()
    reasons = wait_status(server.url + "/ready", 503)["reasons"]
    assert "publisher: not started (no segment publisher)" in reasons
    assert "ingest f.0: not started (no segment books.f.0)" in reasons


def test_redact_hides_passwords() -> None:
    assert redact("redis://:s3cret@h:1/0 x") == "redis://:***@h:1/0 x"
    assert redact("rediss://user:pw@h/0") == "rediss://user:***@h/0"
    assert redact("redis://token@h") == "redis://***@h"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


def test_publisher_lag_is_derived_from_the_rings(instance: str) -> None:
    """A publisher stuck in a Redis call cannot update its gauges: stats and /metrics derive
    its lag from the writer's cursor and the read position it saved."""
    from prometheus_client.exposition import generate_latest

    from mdpipe.metrics import publisher_lag, registry_for
    from mdpipe.shm.segment import read_status

    with (
        RingWriter.create(instance, "books.x.0", "book", symbols=["S"], capacity=64) as w,
        StatusWriter.create(instance, "publisher") as p,
    ):
        for k in range(100):
            w.commit_book(0, 1, 0, 0, k, k, 0, 0, 0)
        p.set("g_cursor_books_x_0", 40)
        p.set("g_lag_records", 0)  # what a frozen publisher last wrote
        p.set("g_lag_ns", 5)
        pub, ring = read_status(instance, "publisher"), read_status(instance, "books.x.0")
        now = time.time_ns()
        lag = publisher_lag(pub, [ring], now)
        assert (lag["g_lag_books_x_0"], lag["g_lag_records"], lag["g_lag_ns"]) == (60, 60, 5)
        assert publisher_lag(pub, [ring], now + 3_000_000_000)["g_lag_ns"] >= 3_000_000_000
        text = generate_latest(registry_for(instance)).decode()
        assert "mdpipe_publisher_lag_records{" in text
        line = next(x for x in text.splitlines() if x.startswith("mdpipe_publisher_lag_records{"))
        assert line.endswith(" 60.0")
        ring_line = next(
            x for x in text.splitlines() if x.startswith("mdpipe_publisher_ring_lag_records{")
        )
        assert 'ring="books.x.0"' in ring_line and ring_line.endswith(" 60.0")
