"""OKX tickers end to end: the simulator's `tickers`, `mark-price`, `funding-rate` and
`open-interest` -> ingest -> ticker ring, every field checked against the message a second
subscriber received with the same instId and ts."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import websocket
from test_ingest_support import IngestProcess, RecordLog, write_sim_config

from mdpipe.shm import layout as L
from mdpipe.sim.process import SimProcess

MS = 1_000_000
BITS = L.TICKER_BITS
FIELDS = {
    "tickers": {
        "last": "last_price",
        "bidPx": "bid_price",
        "bidSz": "bid_qty",
        "askPx": "ask_price",
        "askSz": "ask_qty",
        "open24h": "open_24h",
        "high24h": "high_24h",
        "low24h": "low_24h",
        "vol24h": "volume_24h",
    },
    "mark-price": {"markPx": "mark_price"},
    "funding-rate": {"fundingRate": "funding_rate"},
    "open-interest": {"oi": "open_interest"},
}


class Recorder:
    """Every push of some channels, by (channel, instId, ts)."""

    def __init__(self, url: str, args: list[dict]) -> None:
        self.ws = websocket.create_connection(url, timeout=1)
        self.ws.send(orjson.dumps({"id": "truth", "op": "subscribe", "args": args}))
        self.pushes: dict[tuple[str, str, int], dict] = {}
        self.rows: dict[tuple[str, int], list] = {}  # (instId, open ms) -> newest candle row
        self.newest_ts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    raw = self.ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                if raw == "pong":
                    continue
                msg = orjson.loads(raw)
                if "data" not in msg:
                    continue
                d = msg["data"][0]
                if type(d) is list:  # a candle row: [ts, o, h, l, c, vol, volCcy, volQuote, ok]
                    self.rows[(msg["arg"]["instId"], int(d[0]))] = d
                    continue
                ts = int(d["ts"])
                self.pushes[(msg["arg"]["channel"], msg["arg"]["instId"], ts)] = d
                self.newest_ts = max(self.newest_ts, ts)
        except (websocket.WebSocketException, OSError):
            pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ws.close()


def _check_candles(bars, klines: Recorder, symbols: list[str], market: str) -> int:
    """Each closed OKX candle1s equals our 1 s candle of the same instId and open time."""
    ours = {(symbols[int(c["symbol_id"])], int(c["open_ts_ns"]) // MS): c for c in bars}
    compared = 0
    # The simulator builds a candle from the trades after its first subscriber: the first
    # interval of each instId may have begun before that.
    first = {inst: min(ms for i, ms in klines.rows if i == inst) for inst, _ in klines.rows}
    for row_key, d in sorted(klines.rows.items()):
        inst, open_ms = row_key
        if d[8] != "1" or (inst, open_ms) not in ours or open_ms == first[inst]:
            continue
        c = ours[(inst, open_ms)]
        assert (c["open"], c["high"], c["low"], c["close"]) == tuple(float(x) for x in d[1:5])
        assert math.isclose(c["volume"], float(d[5]), rel_tol=1e-9)
        if market == "spot":  # swaps: OKX's quote volume counts contract value, ours price x sz
            assert math.isclose(c["quote_volume"], float(d[7]), rel_tol=1e-9)
        compared += 1
    return compared


def _channel(updated: int) -> str:
    if updated & BITS["funding_rate"]:
        return "funding-rate"
    if updated & BITS["open_interest"]:
        return "open-interest"
    if updated == BITS["mark_price"]:
        return "mark-price"
    return "tickers"


@pytest.mark.parametrize("market", ["swap", "spot"])
def test_every_ticker_field_is_what_okx_sent(tmp_path: Path, instance: str, market: str) -> None:
    symbols = ["BTC-USDT-SWAP", "ETH-USDT-SWAP"] if market == "swap" else ["BTC-USDT", "ETH-USDT"]
    channels = list(FIELDS) if market == "swap" else ["tickers"]
    args = ["--venue", "okx", "--market", market, "--symbols", ",".join(symbols), "--rate", "300"]
    with SimProcess([*args, "--start-clients", "2"]) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market=market,
            symbols=symbols,
            tickers=True,
            exchange="okx",
            depth_stream="books",
            trade_stream="trades",
            snapshot_limit=400,
            candles=["1s"],
        )
        with IngestProcess(cfg, instance) as ingest:
            tickers = RecordLog(instance, "tickers.f.0", "ticker")
            candles = RecordLog(instance, "candles_1s.f.0", "candle")
            subs = [{"channel": ch, "instId": s} for s in symbols for ch in channels]
            truth = Recorder(f"{sim.ws_url}/ws/v5/public", subs)
            klines = Recorder(
                f"{sim.ws_url}/ws/v5/business",
                [{"channel": "candle1s", "instId": s} for s in symbols],
            )
            try:
                ingest.wait_for("tickers", lambda c: c["tickers"] >= 60, timeout=60)
                ingest.wait_for("candles", lambda c: c["candles"] >= 4, timeout=60)
                records = tickers.drain().copy()
                bars = candles.drain().copy()
                newest = int(records["exchange_ts_ns"].max()) // MS
                deadline = time.monotonic() + 30
                while truth.newest_ts < newest and time.monotonic() < deadline:
                    time.sleep(0.05)
                counters = ingest.counters()
            finally:
                truth.stop()
                klines.stop()
                tickers.close()
                candles.close()
    assert counters["parse_errors"] == 0 and counters["stream_faults"] == 0
    seen = {ch: 0 for ch in channels}
    for rec in records:
        inst = symbols[int(rec["symbol_id"])]
        updated = int(rec["updated"])
        channel = _channel(updated)
        d = truth.pushes[(channel, inst, int(rec["exchange_ts_ns"]) // MS)]
        for key, name in FIELDS[channel].items():
            assert rec[name] == float(d[key]), (channel, name)
            assert updated & BITS[name]
        if channel == "funding-rate":
            assert rec["next_funding_ts_ns"] == int(d["fundingTime"]) * MS
        if channel == "tickers" and market == "spot":
            assert rec["quote_volume_24h"] == float(d["volCcy24h"])
        seen[channel] += 1
    assert all(seen.values()), seen  # every channel reached the ring
    compared = _check_candles(bars, klines, symbols, market)
    assert compared >= 2, compared
    never = ("mark_price", "index_price", "funding_rate", "open_interest")
    if market == "spot":
        for name in never:
            assert not (records["filled"] & BITS[name]).any() and np.isnan(records[name]).all()
    else:
        assert not (records["filled"] & BITS["index_price"]).any()  # OKX swaps: not sent here
