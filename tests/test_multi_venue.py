"""`mdpipe start` with BTCUSDT on Binance futures and on Bybit linear at once: two simulators,
two feeds, and the two books never mix: not in rings, readers, `mdpipe tail`, stats or metrics.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families
from test_ingest_support import CORE
from test_supervisor import PY, REPO, free_port, mdpipe, poll

from mdpipe import readers
from mdpipe.redis_names import DIRECTORY_KEY, SymbolNames
from mdpipe.shm.segment import read_status
from mdpipe.sim.process import SimProcess


def _config(path: Path, binance: SimProcess, bybit: SimProcess, redis_url: str, port: int) -> Path:
    path.write_text(
        f"""
[[feeds]]
name = "binance"
exchange = "binance"
market = "futures"
ws_url = "{binance.ws_url}"
rest_url = "{binance.rest_url}"
symbols = ["BTCUSDT", "ETHUSDT"]
cores = [{CORE}]
depth_stream = "depth@0ms"
reconnect_initial = 0.05
reconnect_max = 0.5

[[feeds]]
name = "bybit"
exchange = "bybit"
market = "linear"
ws_url = "{bybit.ws_url}"
symbols = ["BTCUSDT", "SOLUSDT"]
cores = [{CORE}]
reconnect_initial = 0.05
reconnect_max = 0.5

[redis]
url = "{redis_url}"

[http]
port = {port}
"""
    )
    return path


def test_btcusdt_on_binance_and_bybit_in_one_instance(instance, redis_server, tmp_path) -> None:
    port = free_port()
    with (
        SimProcess(["--symbols", "BTCUSDT,ETHUSDT", "--rate", "300"]) as binance,
        SimProcess(["--venue", "bybit", "--symbols", "BTCUSDT,SOLUSDT", "--rate", "300"]) as bybit,
    ):
        cfg = _config(tmp_path / "multi.toml", binance, bybit, redis_server.url, port)
        log_path = tmp_path / "start.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [PY, "-m", "mdpipe.cli", "start", "--config", str(cfg), "--instance", instance],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        try:

            def ready() -> bool:
                assert proc.poll() is None, log_path.read_text()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
                        return r.status == 200
                except OSError:
                    return False

            poll(ready, 60, f"/ready; log:\n{log_path.read_text() if log_path.exists() else ''}")
            # Rings: one per feed, each naming its venue and market.
            assert read_status(instance, "books.binance.0").exchange == "binance-futures"
            assert read_status(instance, "books.bybit.0").exchange == "bybit-linear"
            b = readers.attach(instance, "books.binance.0", kind="book")
            y = readers.attach(instance, "books.bybit.0", kind="book")
            try:
                # /ready counts a book synced a moment before its first synced record lands.
                poll(
                    lambda: b.top("BTCUSDT") is not None and y.top("BTCUSDT") is not None,
                    10,
                    "BTCUSDT's first synced books in the rings",
                )
                top_b, top_y = b.top("BTCUSDT"), y.top("BTCUSDT")
                assert top_b is not None and top_y is not None
                assert top_b[0] < top_b[2] and top_y[0] < top_y[2]
                assert "SOLUSDT" not in b.symbols and "ETHUSDT" not in y.symbols
            finally:
                b.close()
                y.close()
            # One reader over every book ring lines the venues up by normalized instrument.
            every = readers.attach(instance, "books", kind="book")
            try:
                tops = every.tops("BTC/USDT:perp")
                assert set(tops) == {"binance-futures:BTCUSDT", "bybit-linear:BTCUSDT"}, tops
                assert all(t is not None and t[0] < t[2] for t in tops.values())
            finally:
                every.close()
            # Redis: the publisher lists each (venue, symbol) with names of its own.
            r = redis.Redis.from_url(redis_server.url)
            try:
                fields = ("binance-futures:BTCUSDT", "bybit-linear:BTCUSDT")

                def listed() -> list[SymbolNames] | None:
                    raw = r.hmget(DIRECTORY_KEY, fields)
                    return None if None in raw else [SymbolNames.from_json(x) for x in raw]

                names = poll(listed, 30, "both BTCUSDT venues in the Redis directory")
                assert names[0].orderbook != names[1].orderbook
                assert names[0].trades != names[1].trades
                poll(lambda: all(r.exists(n.orderbook) for n in names), 30, "both book keys")
            finally:
                r.close()
            # tail: ambiguous without --feed, each venue's book with it.
            both = mdpipe("tail", "BTCUSDT", "--instance", instance, "--once")
            assert both.returncode == 1
            assert (
                "BTCUSDT is on several feeds: binance (binance-futures), bybit (bybit-linear)"
                in (both.stderr)
            )
            one = mdpipe("tail", "BTCUSDT", "--instance", instance, "--once", "--feed", "bybit")
            assert one.returncode == 0, one.stderr
            assert "books.bybit.0" in one.stdout and "synced" in one.stdout
            assert mdpipe("tail", "SOLUSDT", "--instance", instance, "--once").returncode == 0
            # stats and metrics: per feed, with the exchange.
            res = mdpipe("stats", "--json", "--instance", instance)
            assert res.returncode == 0, res.stderr
            rings = {r["ring"]: r for r in json.loads(res.stdout)["rings"]}
            table = mdpipe("stats", "--instance", instance).stdout
            ingest = next(b for b in table.split("\n\n") if b.startswith("INGEST")).splitlines()
            rows = {ln.split()[0]: ln.split()[-1] for ln in ingest[1:]}
            assert rows == {"binance.0": "binance-futures", "bybit.0": "bybit-linear"}, table
            assert rings["books.bybit.0"]["exchange"] == "bybit-linear"
            assert rings["books.bybit.0"]["counters"]["g_books_synced"] == 2
            assert rings["books.binance.0"]["counters"]["g_books_synced"] == 2
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                body = r.read().decode()
            synced = {
                (s.labels["feed"], s.labels["exchange"]): s.value
                for f in text_string_to_metric_families(body)
                for s in f.samples
                if s.name == "mdpipe_ingest_books_synced"
            }
            assert synced == {("binance", "binance-futures"): 2, ("bybit", "bybit-linear"): 2}
            stop = mdpipe("stop", "--instance", instance)
            assert stop.returncode == 0, stop.stderr
            proc.wait(30)
            assert proc.returncode == 0, log_path.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
