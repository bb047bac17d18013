"""Binance tickers and candles end to end: simulator -> ingest process -> ticker and candle rings,
checked field by field against what the simulator sent (a second client on the same streams)."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import websocket
from test_ingest_support import IngestProcess, RecordLog, write_sim_config

from mdpipe import readers
from mdpipe.shm import layout as L
from mdpipe.sim.process import SimProcess

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
MS = 1_000_000
BITS = L.TICKER_BITS


class StreamRecorder:
    """Every message the simulator sends on some streams: the ground truth, by stream."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[tuple[str, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.connected = threading.Event()

    def start(self) -> StreamRecorder:
        self._thread.start()
        assert self.connected.wait(10), "recorder could not connect"
        return self

    def _run(self) -> None:
        ws = websocket.create_connection(self.url, timeout=1)
        self.connected.set()
        try:
            while not self._stop.is_set():
                try:
                    raw = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                msg = orjson.loads(raw)
                self.messages.append((msg["stream"], msg["data"]))
        except (websocket.WebSocketException, OSError):
            pass
        finally:
            ws.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def newest_event_ms(self) -> int:
        return max((d["E"] for _, d in list(self.messages)), default=0)

    def of(self, suffix: str) -> list[dict]:
        return [d for s, d in list(self.messages) if s.endswith(suffix)]


def _run(tmp_path: Path, instance: str, market: str, streams: list[str], wait) -> tuple:
    route = "/market/stream" if market == "futures" else "/stream"
    # The market starts once the ingest's connections and the recorder have subscribed,
    # so the recorder and the ingest see every trade from the first.
    clients = 4 if market == "futures" else 3
    args = ["--market", market, "--symbols", ",".join(SYMBOLS), "--rate", "400"]
    with SimProcess([*args, "--start-clients", str(clients)]) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market=market,
            symbols=SYMBOLS,
            tickers=True,
            trade_stream="aggTrade",
            candles=["1s"],
            candle_grace=1.0,
        )
        with IngestProcess(cfg, instance) as ingest:
            tickers = RecordLog(instance, "tickers.f.0", "ticker")
            candles = RecordLog(instance, "candles_1s.f.0", "candle")
            names = "/".join(f"{s.lower()}@{stream}" for s in SYMBOLS for stream in streams)
            recorder = StreamRecorder(f"{sim.ws_url}{route}?streams={names}").start()
            try:
                wait(ingest)
                got = tickers.drain().copy(), candles.drain().copy(), ingest.counters()
                _check_reader_api(instance, got[0], got[1])
                # The recorder reads the same streams: let it catch up with what was drained.
                newest = int(got[0]["exchange_ts_ns"].max()) // MS
                deadline = time.monotonic() + 30
                while recorder.newest_event_ms() < newest and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                recorder.stop()
            tickers.close()
            candles.close()
    return (*got, recorder)


def _metrics(instance: str) -> str:
    """The /metrics text of an instance, rendered by the same collector the server uses."""
    from prometheus_client import CollectorRegistry, generate_latest

    from mdpipe.metrics import InstanceCollector

    registry = CollectorRegistry()
    registry.register(InstanceCollector(instance))
    return generate_latest(registry).decode()


def _check_reader_api(instance: str, tickers: np.ndarray, candles: np.ndarray) -> None:
    """attach(instance, "tickers").latest() and candles() give what the rings hold."""
    with readers.attach(instance, "tickers") as reader:
        latest = reader.latest("BTCUSDT")
        mine = tickers[tickers["symbol_id"] == 0]
        # The writer may have committed a newer one since the drain: never an older one.
        assert latest is not None and latest["symbol_seq"] >= mine["symbol_seq"][-1]
    got = readers.candles(instance, "BTCUSDT", "1s")
    mine = candles[candles["symbol_id"] == 0]
    assert len(got) >= len(np.unique(mine["open_ts_ns"])) and len(got)
    assert (np.diff(got["open_ts_ns"]) > 0).all()
    by_open = {int(c["open_ts_ns"]): c for c in mine}
    for c in got[: len(by_open)]:
        assert c.tobytes()[8:] == by_open[int(c["open_ts_ns"])].tobytes()[8:] or c["revision"] > 0
    assert len(readers.candles(instance, "BTCUSDT", "1s", last=2)) == 2
    with pytest.raises(KeyError, match="no 1s candles"):
        readers.candles(instance, "NOPEUSDT", "1s")
    with pytest.raises(ValueError, match="candle interval '7x'"):
        readers.candles(instance, "BTCUSDT", "7x")


def _check_tickers(records: np.ndarray, recorder: StreamRecorder, futures: bool) -> None:
    sent = {}
    for d in recorder.of("@markPrice@1s"):
        sent[("mark", d["s"], d["E"])] = d
    for d in recorder.of("@ticker"):
        sent[("day", d["s"], d["E"])] = d
    assert records.size, "no ticker records"
    previous: dict[int, np.void] = {}
    checked = {"mark": 0, "day": 0}
    for rec in records:
        sym = SYMBOLS[int(rec["symbol_id"])]
        e_ms = int(rec["exchange_ts_ns"]) // MS
        updated = int(rec["updated"])
        if updated & BITS["mark_price"]:
            d = sent[("mark", sym, e_ms)]
            assert rec["mark_price"] == float(d["p"])
            assert rec["index_price"] == float(d["i"])
            assert rec["funding_rate"] == float(d["r"])
            assert rec["next_funding_ts_ns"] == d["T"] * MS
            checked["mark"] += 1
        else:
            d = sent[("day", sym, e_ms)]
            for key, name in (
                ("c", "last_price"),
                ("o", "open_24h"),
                ("h", "high_24h"),
                ("l", "low_24h"),
                ("v", "volume_24h"),
                ("q", "quote_volume_24h"),
            ):
                assert rec[name] == float(d[key]), name
            if not futures:
                for key, name in (
                    ("b", "bid_price"),
                    ("B", "bid_qty"),
                    ("a", "ask_price"),
                    ("A", "ask_qty"),
                ):
                    assert rec[name] == float(d[key]), name
            checked["day"] += 1
        filled = int(rec["filled"])
        prev = previous.get(int(rec["symbol_id"]))
        for name, bit in BITS.items():
            if not filled & bit:
                value = rec[name]
                assert value == 0 if name == "next_funding_ts_ns" else math.isnan(value), name
            elif not updated & bit:
                assert prev is not None and rec[name] == prev[name], name  # merged, unchanged
        previous[int(rec["symbol_id"])] = rec
    assert checked["day"] >= 2
    if futures:
        assert checked["mark"] >= 2
    else:
        assert checked["mark"] == 0 and not (records["filled"] & BITS["mark_price"]).any()


def _check_candles(candles: np.ndarray, recorder: StreamRecorder) -> int:
    ours = {}
    for c in candles:  # the newest revision of each candle
        ours[(int(c["symbol_id"]), int(c["open_ts_ns"]))] = c
    compared = 0
    for d in recorder.of("@kline_1s"):
        k = d["k"]
        if not k["x"]:
            continue
        c = ours.get((SYMBOLS.index(d["s"]), k["t"] * MS))
        if c is None:
            continue  # published by the venue after the ingest's last candle was read
        assert c["interval_ns"] == 1_000_000_000
        assert (c["open"], c["high"], c["low"], c["close"]) == tuple(float(k[x]) for x in "ohlc"), k
        assert math.isclose(c["volume"], float(k["v"]), rel_tol=1e-9), k
        assert math.isclose(c["quote_volume"], float(k["q"]), rel_tol=1e-9), k
        assert math.isclose(c["taker_buy_volume"], float(k["V"]), rel_tol=1e-9, abs_tol=1e-12)
        assert int(c["trades"]) == k["n"]
        assert (int(c["first_trade_id"]), int(c["last_trade_id"])) == (k["f"], k["L"])
        assert int(c["flags"]) & L.FLAG_CANDLE_AMENDED == 0
        compared += 1
    return compared


@pytest.mark.parametrize("market", ["futures", "spot"])
def test_every_ticker_field_is_what_binance_sent(
    tmp_path: Path, instance: str, market: str
) -> None:
    futures = market == "futures"
    streams = ["ticker", "markPrice@1s"] if futures else ["ticker", "kline_1s"]

    def enough(ingest: IngestProcess) -> None:
        ingest.wait_for("tickers", lambda c: c["tickers"] >= 12, timeout=60)
        if not futures:
            ingest.wait_for("candles", lambda c: c["candles"] >= 8, timeout=60)

    tickers, candles, counters, recorder = _run(tmp_path, instance, market, streams, enough)
    _check_tickers(tickers, recorder, futures)
    assert counters["g_tickers_stale"] == 0 and counters["g_funding_stale"] == 0
    if not futures:
        assert _check_candles(candles, recorder) >= 4
        assert counters["candles_late_dropped"] == 0


def test_funding_that_stops_is_detected(tmp_path: Path, instance: str) -> None:
    """A venue that stops sending mark price and funding shows in g_funding_stale."""
    with SimProcess(
        ["--market", "futures", "--symbols", ",".join(SYMBOLS), "--rate", "200"]
    ) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market="futures",
            symbols=SYMBOLS,
            tickers=True,
            ticker_timeout=2.0,
            silence_timeout=60.0,
        )
        with IngestProcess(cfg, instance) as ingest:
            ingest.wait_for("mark prices", lambda c: c["tickers"] >= 4, timeout=60)
            assert ingest.counters()["g_funding_stale"] == 0
            sim.inject("silence", seconds=30)
            ingest.wait_for("stale funding", lambda c: c["g_funding_stale"] == 2, timeout=30)
            res = subprocess.run(
                [sys.executable, "-m", "mdpipe.cli", "stats", "--instance", instance],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert res.returncode == 0, res.stderr
            assert (
                "STALE: ingest f.0: 2 symbol(s) with no mark price / funding update" in res.stdout
            )
            assert "tickers.f.0" in res.stdout and "candles_1s.f.0" in res.stdout
            metrics = "\n".join(
                line for line in _metrics(instance).splitlines() if not line.startswith("#")
            )
            stale = [
                ln for ln in metrics.splitlines() if ln.startswith("mdpipe_ingest_funding_stale{")
            ]
            assert len(stale) == 1 and stale[0].endswith(" 2.0"), stale
            assert 'ring="tickers.f.0"' in metrics
