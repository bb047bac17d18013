"""Every closed candle the ingest builds equals the venue's own kline of the same interval.

The simulator serves each venue's klines built from its own trades by exchange trade time
(Binance `<s>@kline_<i>`, Bybit `kline.<i>.<SYM>`, OKX `candle<i>` on /business). A second
client records them while an ingest process builds candles from the trade stream. The
market starts once both have subscribed, so both see every trade. With `--speed` the
exchange clock runs faster than the wall clock: a minute of exchange time passes in a
second, so 1-minute candles close in seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import websocket
from test_ingest_support import IngestProcess, RecordLog, write_sim_config

from mdpipe.shm import layout as L
from mdpipe.sim.process import SimProcess

MS = 1_000_000
CANDLES_PER_SYMBOL = 4


@dataclass(frozen=True)
class Kline:
    """A venue kline reduced to what a candle holds (None: the venue does not send it)."""

    ohlc: tuple[float, float, float, float]
    volume: float
    quote: float | None
    trades: int | None = None
    ids: tuple[int, int] | None = None
    taker_volume: float | None = None


class KlineRecorder:
    """The confirmed klines a venue pushed, by (symbol, open ms); the newest push of each."""

    def __init__(self, url: str, subscribe: bytes | None, read: Callable[[Any], tuple | None]):
        self.ws = websocket.create_connection(url, timeout=1)
        if subscribe is not None:
            self.ws.send(subscribe)
        self.read = read
        self.closed: dict[tuple[str, int], Kline] = {}
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
                got = self.read(orjson.loads(raw))
                if got is not None:
                    key, confirmed, kline = got
                    if confirmed:
                        self.closed[key] = kline
        except (websocket.WebSocketException, OSError):
            pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ws.close()


def _binance(msg: dict) -> tuple | None:
    d = msg.get("data")
    if not d or d.get("e") != "kline":
        return None
    k = d["k"]
    kline = Kline(
        tuple(float(k[x]) for x in "ohlc"),
        float(k["v"]),
        float(k["q"]),
        k["n"],
        (k["f"], k["L"]),
        float(k["V"]),
    )
    return (d["s"], k["t"]), k["x"], kline


def _bybit(msg: dict) -> tuple | None:
    if not msg.get("topic", "").startswith("kline."):
        return None
    d = msg["data"][0]
    assert d["end"] == d["start"] + int(d["interval"]) * 60_000 - 1
    ohlc = tuple(float(d[x]) for x in ("open", "high", "low", "close"))
    kline = Kline(ohlc, float(d["volume"]), float(d["turnover"]))
    return (msg["topic"].rsplit(".", 1)[1], d["start"]), d["confirm"], kline


def _okx(quote: bool) -> Callable[[dict], tuple | None]:
    def read(msg: dict) -> tuple | None:
        if "data" not in msg or not msg["arg"]["channel"].startswith("candle"):
            return None
        row = msg["data"][0]  # [ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]
        ohlc = tuple(float(x) for x in row[1:5])
        kline = Kline(ohlc, float(row[5]), float(row[7]) if quote else None)
        return (msg["arg"]["instId"], int(row[0])), row[8] == "1", kline

    return read


@dataclass(frozen=True)
class Case:
    venue: str
    market: str
    interval: str
    speed: int
    symbols: tuple[str, ...]
    feed: dict[str, Any]
    clients: int  # the ingest's connections and the recorder's: the market starts then
    url: Callable[[str], str]
    subscribe: bytes | None
    read: Callable[[dict], tuple | None]


def _binance_case(market: str, interval: str, speed: int) -> Case:
    route = "/market/stream" if market == "futures" else "/stream"
    symbols = ("BTCUSDT", "ETHUSDT")
    names = "/".join(f"{s.lower()}@kline_{interval}" for s in symbols)
    return Case("binance", market, interval, speed, symbols, {"trade_stream": "aggTrade"},
                3 if market == "futures" else 2, lambda ws: f"{ws}{route}?streams={names}",
                None, _binance)  # fmt: skip


def _bybit_case(market: str) -> Case:
    symbols = ("BTCUSDT", "ETHUSDT")
    topics = [f"kline.1.{s}" for s in symbols]
    feed = {"exchange": "bybit", "depth_stream": "orderbook.50", "trade_stream": "publicTrade"}
    sub = orjson.dumps({"op": "subscribe", "req_id": "k", "args": topics})
    return Case("bybit", market, "1m", 60, symbols, feed, 2,
                lambda ws: f"{ws}/v5/public/{market}", sub, _bybit)  # fmt: skip


def _okx_case(market: str, interval: str, speed: int) -> Case:
    symbols = ("BTC-USDT-SWAP", "ETH-USDT-SWAP") if market == "swap" else ("BTC-USDT", "ETH-USDT")
    feed = {"exchange": "okx", "depth_stream": "books", "trade_stream": "trades",
            "snapshot_limit": 400}  # fmt: skip
    args = [{"channel": f"candle{interval}", "instId": s} for s in symbols]
    sub = orjson.dumps({"id": "k", "op": "subscribe", "args": args})
    # Swaps: OKX's quote volume counts contract value, the ingest's price x size.
    return Case("okx", market, interval, speed, symbols, feed, 2,
                lambda ws: f"{ws}/ws/v5/business", sub, _okx(market == "spot"))  # fmt: skip


CASES = [
    _binance_case("spot", "1s", 4),
    _binance_case("futures", "1m", 60),
    _bybit_case("linear"),
    _bybit_case("spot"),
    _okx_case("swap", "1s", 4),
    _okx_case("spot", "1m", 60),
]


def _same(ours: float, venue: float) -> bool:
    return math.isclose(ours, venue, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.venue}-{c.market}-{c.interval}" for c in CASES])
def test_every_closed_candle_equals_the_venue_kline(
    tmp_path: Path, instance: str, case: Case
) -> None:
    args = ["--venue", case.venue, "--market", case.market, "--symbols", ",".join(case.symbols),
            "--rate", "400", "--speed", str(case.speed), "--start-clients", str(case.clients)]  # fmt: skip
    with SimProcess(args) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market=case.market,
            symbols=list(case.symbols),
            candles=[case.interval],
            **case.feed,
        )
        with IngestProcess(cfg, instance) as ingest:
            candles = RecordLog(instance, f"candles_{case.interval}.f.0", "candle")
            truth = KlineRecorder(case.url(sim.ws_url), case.subscribe, case.read)
            try:
                want = CANDLES_PER_SYMBOL * len(case.symbols)
                counters = ingest.wait_for("candles", lambda c: c["candles"] >= want, 60)
                bars = candles.drain().copy()
                ours = {}
                for c in bars:  # the newest revision of each candle
                    sym = case.symbols[int(c["symbol_id"])]
                    ours[(sym, int(c["open_ts_ns"]) // MS)] = c
                deadline = time.monotonic() + 30
                while set(ours) - set(truth.closed) and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                truth.stop()
                candles.close()
    assert counters["parse_errors"] == 0 and counters["candles_late_dropped"] == 0
    interval_ns = int(case.interval[:-1]) * (
        MS * 1000 if case.interval[-1] == "s" else 60 * MS * 1000
    )
    per_symbol = {s: sum(1 for sym, _ in ours if sym == s) for s in case.symbols}
    assert min(per_symbol.values()) >= 2, per_symbol
    missing = sorted(set(ours) - set(truth.closed))
    assert not missing, f"closed candles the venue never confirmed: {missing[:5]}"
    for key, c in sorted(ours.items()):
        k = truth.closed[key]
        assert int(c["interval_ns"]) == interval_ns
        assert int(c["flags"]) & (L.FLAG_CANDLE_AMENDED | L.FLAG_CANDLE_OPEN) == 0, key
        got = (float(c["open"]), float(c["high"]), float(c["low"]), float(c["close"]))
        assert got == k.ohlc, (key, got, k)
        assert _same(float(c["volume"]), k.volume), (key, float(c["volume"]), k)
        if k.quote is not None:
            assert _same(float(c["quote_volume"]), k.quote), (key, float(c["quote_volume"]), k)
        if k.trades is not None:
            assert int(c["trades"]) == k.trades, key
        if k.ids is not None:
            assert (int(c["first_trade_id"]), int(c["last_trade_id"])) == k.ids, key
        if k.taker_volume is not None:
            assert _same(float(c["taker_buy_volume"]), k.taker_volume), key
