"""Bybit tickers end to end: the simulator's `tickers.{symbol}` (linear: a snapshot, then deltas
of the changed fields; spot: snapshots) -> ingest -> ticker ring, every field checked against
the state a second subscriber merges from the same messages; candles from its trades."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import orjson
import pytest
import websocket
from test_ingest_support import IngestProcess, RecordLog, write_sim_config

from mdpipe.shm import layout as L
from mdpipe.sim.process import SimProcess

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
MS = 1_000_000
KEYS = {
    "lastPrice": "last_price",
    "markPrice": "mark_price",
    "indexPrice": "index_price",
    "openInterest": "open_interest",
    "prevPrice24h": "open_24h",
    "highPrice24h": "high_24h",
    "lowPrice24h": "low_24h",
    "volume24h": "volume_24h",
    "turnover24h": "quote_volume_24h",
    "bid1Price": "bid_price",
    "bid1Size": "bid_qty",
    "ask1Price": "ask_price",
    "ask1Size": "ask_qty",
    "fundingRate": "funding_rate",
}


class MergingRecorder:
    """Subscribes the tickers topics and keeps, per (symbol, ts), the merged full state."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=1)
        args = [f"tickers.{s}" for s in SYMBOLS]
        self.ws.send(orjson.dumps({"op": "subscribe", "req_id": "truth", "args": args}))
        self.states: dict[tuple[str, int], dict[str, str]] = {}
        self.newest_ts = 0
        self._state: dict[str, dict[str, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    msg = orjson.loads(self.ws.recv())
                except websocket.WebSocketTimeoutException:
                    continue
                if not str(msg.get("topic", "")).startswith("tickers."):
                    continue
                data = msg["data"]
                sym = data["symbol"]
                if msg["type"] == "snapshot":
                    self._state[sym] = dict(data)
                else:
                    self._state.setdefault(sym, {}).update(data)
                self.states[(sym, msg["ts"])] = dict(self._state[sym])
                self.newest_ts = max(self.newest_ts, msg["ts"])
        except (websocket.WebSocketException, OSError):
            pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ws.close()


@pytest.mark.parametrize("market", ["linear", "spot"])
def test_every_ticker_field_is_the_merged_bybit_state(
    tmp_path: Path, instance: str, market: str
) -> None:
    args = ["--venue", "bybit", "--market", market, "--symbols", ",".join(SYMBOLS)]
    with SimProcess([*args, "--rate", "300", "--start-clients", "2"]) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market=market,
            symbols=SYMBOLS,
            tickers=True,
            exchange="bybit",
            depth_stream="orderbook.50",
            trade_stream="publicTrade",
            candles=["1s"],
        )
        with IngestProcess(cfg, instance) as ingest:
            tickers = RecordLog(instance, "tickers.f.0", "ticker")
            truth = MergingRecorder(f"{sim.ws_url}/v5/public/{market}")
            try:
                ingest.wait_for("tickers", lambda c: c["tickers"] >= 40, timeout=60)
                ingest.wait_for("candles", lambda c: c["candles"] >= 4, timeout=60)
                records = tickers.drain().copy()
                newest = int(records["exchange_ts_ns"].max()) // MS
                deadline = time.monotonic() + 30
                while truth.newest_ts < newest and time.monotonic() < deadline:
                    time.sleep(0.05)
                counters = ingest.counters()
            finally:
                truth.stop()
                tickers.close()
    assert counters["stream_faults"] == 0 and counters["parse_errors"] == 0
    compared = 0
    seen: set[int] = set()
    for rec in records:
        sid = int(rec["symbol_id"])
        first = sid not in seen
        seen.add(sid)
        state = truth.states.get((SYMBOLS[sid], int(rec["exchange_ts_ns"]) // MS))
        if state is None:
            assert first, "only a subscriber's own first snapshot is not on the shared stream"
            continue
        filled = int(rec["filled"])
        for key, name in KEYS.items():
            bit = L.TICKER_BITS[name]
            if key in state:
                assert filled & bit and rec[name] == float(state[key]), (name, state[key])
            else:
                assert not filled & bit and math.isnan(rec[name]), name
        if "nextFundingTime" in state:
            assert rec["next_funding_ts_ns"] == int(state["nextFundingTime"]) * MS
        else:
            assert rec["next_funding_ts_ns"] == 0
        compared += 1
    assert compared >= 20
    if market == "linear":
        assert (records["updated"] != records["filled"]).any(), "deltas carry only some fields"
    else:
        assert not (records["filled"] & L.TICKER_BITS["mark_price"]).any()
