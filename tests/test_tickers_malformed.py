"""Malformed ticker frames of every venue, fed to an ingest shard's frame path (no sockets),
and the simulator's `malformed` fault on a Bybit and an OKX feed with tickers.

Each of the simulator's seven `malformed` variants, shaped like each ticker stream (Binance
`@ticker` and `@markPrice`, Bybit `tickers.*`, OKX `tickers`, `mark-price`, `funding-rate`,
`open-interest`), plus a broken value in a field the ticker does not keep: every one is
counted as a parse error, kept in the dead-letter file and skipped (the ticker ring does not
move), and a good frame after them is committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import remove_segments
from test_ingest_support import IngestProcess, write_config, write_sim_config

from mdpipe import config
from mdpipe.ingest.shard import Shard, tickers_ring_name
from mdpipe.shm.segment import read_status
from mdpipe.sim.faults import MALFORMED_VARIANTS
from mdpipe.sim.malformed import malformed_message
from mdpipe.sim.process import SimProcess
from mdpipe.sim.venues import _bybit_tickers
from mdpipe.sim.venues._okx import tickers as okx_tickers

NOW_MS = int(time.time() * 1000)
TOO_LATE_MS = 1 << 62  # an int, but far past what int64 nanoseconds hold


def _binance_ticker(market: str, **changes: object) -> bytes:
    body = orjson.loads(malformed_message("none", "btcusdt@ticker", True, market, 1, NOW_MS, 0))
    body["data"].update(changes)
    return orjson.dumps(body)


def _binance_mark(**changes: object) -> bytes:
    stream = "btcusdt@markPrice@1s"
    body = orjson.loads(malformed_message("none", stream, True, "futures", 1, NOW_MS, 0))
    body["data"].update(changes)
    return orjson.dumps(body)


def _bybit_ticker(linear: bool, **changes: str) -> bytes:
    data = {"symbol": "BTCUSDT", "lastPrice": "100.0", "price24hPcnt": "0.01", **changes}
    return _bybit_tickers.message("BTCUSDT", "snapshot", data, NOW_MS, 7, linear)


def _okx_push(channel: str, inst_id: str, **changes: object) -> bytes:
    body = orjson.loads(okx_tickers.malformed_push("none", channel, inst_id, NOW_MS, 0))
    item = body["data"][0]
    if channel == "tickers":
        item.update({k: "1" for k in ("bidPx", "bidSz", "askPx", "askSz", "open24h", "high24h",
                                      "low24h", "vol24h", "volCcy24h")})  # fmt: skip
    item.update(changes)
    return orjson.dumps(body)


# venue, market, symbol, the good frames, and the bad ones: (name, frame)
def _cases() -> list[tuple[str, str, str, list[bytes], list[tuple[str, bytes]]]]:
    cases = []
    for market in ("futures", "spot"):
        streams = ["btcusdt@ticker"] + (["btcusdt@markPrice@1s"] if market == "futures" else [])
        bad = [
            (f"{s} {v}", malformed_message(v, s, True, market, 1, NOW_MS, 4096))
            for s in streams
            for v in MALFORMED_VARIANTS
        ]
        bad += [
            ("24hrTicker p NaN", _binance_ticker(market, p="NaN")),
            ("24hrTicker P a number", _binance_ticker(market, P=1.5)),
            ("24hrTicker w negative", _binance_ticker(market, w="-1.00")),
            ("24hrTicker n a string", _binance_ticker(market, n="1")),
            ("24hrTicker E past int64 ns", _binance_ticker(market, E=TOO_LATE_MS)),
        ]
        good = [_binance_ticker(market)]
        if market == "futures":
            bad += [
                ("markPrice P NaN", _binance_mark(P="NaN")),
                ("markPrice T past int64 ns", _binance_mark(T=TOO_LATE_MS)),
            ]
            good.append(_binance_mark())
        cases.append(("binance", market, "BTCUSDT", good, bad))
    for market in ("linear", "spot"):
        linear = market == "linear"
        bad = [
            (f"tickers {v}", _bybit_tickers.malformed(v, "BTCUSDT", NOW_MS, 7, linear, 4096))
            for v in MALFORMED_VARIANTS
        ]
        bad += [
            ("price24hPcnt NaN", _bybit_ticker(linear, price24hPcnt="NaN")),
            ("openInterestValue negative", _bybit_ticker(linear, openInterestValue="-5")),
            (
                "nextFundingTime past int64 ns",
                _bybit_ticker(linear, nextFundingTime=str(TOO_LATE_MS)),
            ),
        ]
        cases.append(("bybit", market, "BTCUSDT", [_bybit_ticker(linear)], bad))
    for market, inst_id in (("swap", "BTC-USDT-SWAP"), ("spot", "BTC-USDT")):
        channels = okx_tickers.CHANNELS if market == "swap" else ("tickers",)
        bad = [
            (f"{ch} {v}", okx_tickers.malformed_push(v, ch, inst_id, NOW_MS, 4096))
            for ch in channels
            for v in MALFORMED_VARIANTS
        ]
        bad += [
            ("tickers lastSz NaN", _okx_push("tickers", inst_id, lastSz="NaN")),
            ("tickers ts past int64 ns", _okx_push("tickers", inst_id, ts=str(TOO_LATE_MS))),
        ]
        if market == "swap":
            bad += [
                ("funding-rate premium NaN", _okx_push("funding-rate", inst_id, premium="NaN")),
                ("open-interest oiUsd negative", _okx_push("open-interest", inst_id, oiUsd="-1")),
            ]
        good = [_okx_push(ch, inst_id) for ch in channels]
        cases.append(("okx", market, inst_id, good, bad))
    return cases


CASES = _cases()


@pytest.fixture
def shard_for(tmp_path: Path, instance: str) -> Iterator:
    """shard_for(venue, market, symbol): a tickers-enabled shard, never connected."""
    made: list[Shard] = []

    def make(venue: str, market: str, symbol: str) -> Shard:
        streams = {
            "binance": {"depth_stream": "depth@100ms", "trade_stream": "aggTrade"},
            "bybit": {"depth_stream": "orderbook.50", "trade_stream": "publicTrade"},
            "okx": {"depth_stream": "books", "trade_stream": "trades", "snapshot_limit": 400},
        }[venue]
        path = write_config(
            tmp_path / f"{venue}-{market}.toml",
            instance,
            ws_url="ws://127.0.0.1:9",
            rest_url="http://127.0.0.1:9",
            market=market,
            symbols=[symbol],
            dead_letter_dir=tmp_path / "dead",
            exchange=venue,
            tickers=True,
            **streams,
        )
        cfg = config.load(str(path), check_ports=False)
        feed = cfg.feeds[0]
        shard = Shard(cfg, feed, 0, 0, list(feed.symbols), threading.Event())
        made.append(shard)
        return shard

    yield make
    for shard in made:
        shard.close()
    remove_segments(instance)


@pytest.mark.parametrize(
    ("venue", "market", "symbol", "good", "bad"),
    CASES,
    ids=[f"{c[0]}-{c[1]}" for c in CASES],
)
def test_every_malformed_ticker_frame_is_counted_kept_and_skipped(
    shard_for, venue: str, market: str, symbol: str, good: list[bytes], bad: list[tuple[str, bytes]]
) -> None:
    shard = shard_for(venue, market, symbol)
    ctr = shard.ctr
    conn = shard.conns[-1]
    ring = tickers_ring_name("f", 0)
    parsed = []
    for name, frame in bad:
        before = int(ctr.arr[ctr.parse_errors])
        shard._on_frame(conn, frame, time.time_ns())
        if int(ctr.arr[ctr.parse_errors]) != before + 1:
            parsed.append(name)
    assert not parsed, f"{venue} {market}: bad frames not counted: {parsed}"
    assert int(ctr.arr[ctr.dead_lettered]) == len(bad)
    assert int(ctr.arr[ctr.tickers]) == 0
    assert read_status(shard.cfg.instance, ring).write_cursor == 0  # nothing committed
    shard.dead.close()
    kept = [orjson.loads(line) for line in shard.dead.path.read_bytes().splitlines()]
    assert [k["raw"].encode() for k in kept] == [frame for _, frame in bad]
    for frame in good:
        shard._on_frame(conn, frame, time.time_ns())
    assert int(ctr.arr[ctr.parse_errors]) == len(bad)
    assert read_status(shard.cfg.instance, ring).write_cursor == len(good)


BIG = (1 << 64) - 1  # fits JSON parsing, not a signed 64-bit field


def _binance_agg(**changes: object) -> bytes:
    data = {"e": "aggTrade", "E": NOW_MS, "s": "BTCUSDT", "a": 5, "p": "1.0", "q": "1.0", "f": 5,
            "l": 5, "T": NOW_MS, "m": False, **changes}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": data})


def _binance_depth(**changes: object) -> bytes:
    data = {"e": "depthUpdate", "E": NOW_MS, "T": NOW_MS, "s": "BTCUSDT", "U": 5, "u": 6,
            "pu": 4, "b": [["1.0", "1.0"]], "a": [], **changes}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@depth@100ms", "data": data})


def _bybit_trade(**changes: object) -> bytes:
    row = {"T": NOW_MS, "s": "BTCUSDT", "S": "Buy", "v": "1.0", "p": "1.0", "i": "x", "seq": 9,
           **changes}  # fmt: skip
    return orjson.dumps({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": NOW_MS,
                         "data": [row]})  # fmt: skip


def _bybit_book(**changes: object) -> bytes:
    data = {"s": "BTCUSDT", "b": [["1.0", "1.0"]], "a": [], "u": 7, "seq": 9, **changes}
    return orjson.dumps({"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": NOW_MS,
                         "data": data, "cts": NOW_MS})  # fmt: skip


def _okx_trade(**changes: object) -> bytes:
    item = {"instId": "BTC-USDT-SWAP", "tradeId": "5", "px": "1.0", "sz": "1", "side": "buy",
            "ts": str(NOW_MS), "count": "1", **changes}  # fmt: skip
    return orjson.dumps({"arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"}, "data": [item]})


def _okx_book(**changes: object) -> bytes:
    item = {"asks": [["1.0", "1", "0", "1"]], "bids": [], "ts": str(NOW_MS), "checksum": 0,
            "prevSeqId": 8, "seqId": 9, **changes}  # fmt: skip
    return orjson.dumps({"arg": {"channel": "books", "instId": "BTC-USDT-SWAP"},
                         "action": "update", "data": [item]})  # fmt: skip


OUT_OF_RANGE = [
    ("binance", "futures", "BTCUSDT", [
        ("aggTrade T past int64 ns", _binance_agg(T=TOO_LATE_MS)),
        ("aggTrade E past int64 ns", _binance_agg(E=TOO_LATE_MS)),
        ("aggTrade a negative", _binance_agg(a=-5, f=-5, l=-5)),
        ("depthUpdate u past 2**63", _binance_depth(U=BIG, u=BIG)),
        ("depthUpdate E past int64 ns", _binance_depth(E=TOO_LATE_MS)),
    ]),
    ("bybit", "linear", "BTCUSDT", [
        ("publicTrade T past int64 ns", _bybit_trade(T=TOO_LATE_MS)),
        ("publicTrade seq past the trade id space", _bybit_trade(seq=1 << 60)),
        ("orderbook u past 2**63", _bybit_book(u=BIG)),
    ]),
    ("okx", "swap", "BTC-USDT-SWAP", [
        ("trades ts past int64 ns", _okx_trade(ts=str(TOO_LATE_MS))),
        ("trades tradeId past 2**63", _okx_trade(tradeId=str(BIG))),
        ("books seqId past 2**63", _okx_book(seqId=BIG)),
    ]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("venue", "market", "symbol", "bad"), OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE]
)
def test_depth_and_trade_frames_with_numbers_no_record_holds_are_counted_not_fatal(
    shard_for, venue: str, market: str, symbol: str, bad: list[tuple[str, bytes]]
) -> None:
    shard = shard_for(venue, market, symbol)
    ctr = shard.ctr
    for name, frame in bad:
        before = int(ctr.arr[ctr.parse_errors])
        shard._on_frame(shard.conns[0], frame, time.time_ns())
        assert int(ctr.arr[ctr.parse_errors]) == before + 1, name
    assert int(ctr.arr[ctr.dead_lettered]) == len(bad)
    assert read_status(shard.cfg.instance, shard.trades_w.ring).write_cursor == 0


LIVE = [
    ("bybit", "linear", ["BTCUSDT", "ETHUSDT"],
     {"depth_stream": "orderbook.50", "trade_stream": "publicTrade"}),
    ("okx", "swap", ["BTC-USDT-SWAP", "ETH-USDT-SWAP"],
     {"depth_stream": "books", "trade_stream": "trades", "snapshot_limit": 400}),
]  # fmt: skip


@pytest.mark.parametrize(("venue", "market", "symbols", "feed"), LIVE, ids=[c[0] for c in LIVE])
def test_the_malformed_fault_on_a_feed_with_tickers_is_counted_frame_for_frame(
    tmp_path: Path, instance: str, venue: str, market: str, symbols: list[str], feed: dict
) -> None:
    """Through the simulator: seven bad book frames and seven bad ticker frames on the one
    connection, each counted and kept, the books still synced, the tickers still flowing."""
    args = ["--venue", venue, "--market", market, "--symbols", ",".join(symbols), "--rate", "300"]
    with SimProcess(args) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market=market,
            symbols=symbols,
            exchange=venue,
            tickers=True,
            **feed,
        )
        with IngestProcess(cfg, instance) as ingest:
            c0 = ingest.wait_for(
                "books synced and tickers flowing",
                lambda c: c["g_books_synced"] == len(symbols) and c["tickers"] >= 10,
                30,
            )
            done = sim.inject("malformed")
            assert done["connections"] == 1 and done["frames"] == 14, done
            c1 = ingest.wait_for(
                "14 bad frames counted and kept, then more tickers",
                lambda c: (
                    c["dead_lettered"] >= c0["dead_lettered"] + 14
                    and c["tickers"] >= c0["tickers"] + 10
                    and c["g_books_synced"] == len(symbols)
                ),
                30,
            )
            assert c1["parse_errors"] - c0["parse_errors"] == 14
            assert c1["dead_lettered"] - c0["dead_lettered"] == 14
            assert c1["gaps"] == c0["gaps"] and c1["resyncs"] == c0["resyncs"]
            assert ingest.stop() == 0
