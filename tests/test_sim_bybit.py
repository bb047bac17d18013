"""The Bybit simulator speaks Bybit v5: acks, errors, ping, limits, book consistency, tapes."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import orjson
import pytest
import websocket
from conftest import remove_segments, unique_instance
from test_ingest_support import IngestProcess, RecordLog, write_sim_config

from mdpipe.shm import layout as L
from mdpipe.sim.process import SimProcess
from mdpipe.sim.venues.bybit import synthetic_frames
from mdpipe.venues.base import BookTicker, DepthDiff, DepthSnapshot, Trades
from mdpipe.venues.bybit.sync import BybitBookSync
from mdpipe.venues.bybit.wire import BybitParser
from mdpipe.venues.local_book import LocalBook


def _connect(sim: SimProcess, market: str) -> websocket.WebSocket:
    return websocket.create_connection(f"{sim.ws_url}/v5/public/{market}", timeout=10)


def _request(ws: websocket.WebSocket, op: str, req_id: str, args: list[str]) -> dict:
    ws.send(orjson.dumps({"op": op, "req_id": req_id, "args": args}))
    while True:
        msg = orjson.loads(ws.recv())
        if "op" in msg:
            return msg


@pytest.fixture(scope="module")
def linear() -> SimProcess:
    with SimProcess(["--venue", "bybit", "--symbols", "BTCUSDT,ETHUSDT", "--rate", "500"]) as sim:
        yield sim


def test_linear_acks_errors_and_pong(linear: SimProcess) -> None:
    ws = _connect(linear, "linear")
    ok = _request(ws, "subscribe", "s1", ["publicTrade.BTCUSDT"])
    assert list(ok) == ["success", "ret_msg", "conn_id", "req_id", "op"]
    assert (ok["success"], ok["ret_msg"], ok["req_id"], ok["op"]) == (True, "", "s1", "subscribe")
    bad = _request(ws, "subscribe", "s2", ["orderbook.500.BTCUSDT"])
    assert (bad["success"], bad["ret_msg"]) == (False, "error:handler not found")
    again = _request(ws, "subscribe", "s3", ["publicTrade.BTCUSDT"])
    assert again["ret_msg"] == "error:already subscribed,topic:publicTrade.BTCUSDT"
    pong = _request(ws, "ping", "hb", [])
    assert (pong["success"], pong["ret_msg"], pong["op"], pong["req_id"]) == (
        True,
        "pong",
        "ping",
        "hb",
    )
    ws.close()
    assert _connect_status(linear, "/v5/public/spot") == 404


def _connect_status(sim: SimProcess, path: str) -> int:
    try:
        websocket.create_connection(f"{sim.ws_url}{path}", timeout=5).close()
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code
    return 101


def test_book_topics_rebuild_to_orderbook_1_at_equal_seq(linear: SimProcess) -> None:
    """Snapshot then u + 1 deltas rebuild the book; where orderbook.1 has the same seq, its
    top is the book's top."""
    ws = _connect(linear, "linear")
    _request(ws, "subscribe", "s", ["orderbook.50.ETHUSDT", "orderbook.1.ETHUSDT"])
    parser = BybitParser("linear")
    local = LocalBook(BybitBookSync(), "ETHUSDT")
    tops: dict[int, tuple[float, float, float, float]] = {}
    books: dict[int, tuple[float, float, float, float]] = {}
    first = None
    for _ in range(1500):
        ev = parser.parse(ws.recv())
        if isinstance(ev, BookTicker):
            tops[ev.update_id] = (ev.bid_price, ev.bid_qty, ev.ask_price, ev.ask_qty)
            continue
        if first is None:
            first = ev
            assert isinstance(ev, DepthSnapshot)  # the first push after subscribing
            local.on_snapshot(ev)
        else:
            assert isinstance(ev, DepthDiff)
            assert local.on_diff(ev).name == "APPLY", local.sync.reason
        (bp, bq), (ap, aq) = local.book.best_bid(), local.book.best_ask()
        books[local.sync.last_update_id] = (bp, bq, ap, aq)
    ws.close()
    common = set(tops) & set(books)
    assert len(common) > 20
    assert all(tops[s] == books[s] for s in common)


def test_spot_limits_and_layout() -> None:
    with SimProcess(["--venue", "bybit", "--market", "spot", "--symbols", "BTCUSDT",
                     "--rate", "300"]) as sim:  # fmt: skip
        ws = _connect(sim, "spot")
        args = [f"orderbook.{d}.BTCUSDT" for d in (1, 50, 200, 1000)] * 3
        too_many = _request(ws, "subscribe", "big", args[:11])
        assert (too_many["success"], too_many["ret_msg"]) == (False, "args size >10")
        ok = _request(ws, "subscribe", "s", ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"])
        assert (ok["success"], ok["ret_msg"]) == (True, "subscribe")
        kinds = set()
        for _ in range(200):
            raw = ws.recv()
            msg = orjson.loads(raw)
            if msg["topic"].startswith("orderbook"):
                assert list(msg) == ["topic", "ts", "type", "data", "cts"]  # spot: ts first
                kinds.add(msg["type"])
            else:
                assert "L" not in msg["data"][0] and msg["data"][0]["i"].isdigit()
        assert kinds == {"snapshot", "delta"}
        ws.close()


def test_a_tape_replays_into_exact_books_and_every_trade(tmp_path: Path) -> None:
    """A tape in the `<receive ns> <raw frame>` format, replayed by `mdpipe sim --venue bybit
    --tape`, syncs ingest from its snapshot; the last record equals the tape's own book."""
    frames = synthetic_frames("BTCUSDT", 50, 400, 8, seed=3)
    tape = tmp_path / "bybit.gz"
    with gzip.open(tape, "wb") as f:
        for ns, raw in frames:
            f.write(b"%d %s\n" % (ns, raw))
    parser = BybitParser("linear")
    expected = LocalBook(BybitBookSync())
    trades = 0
    for _, raw in frames:
        ev = parser.parse(raw)
        if isinstance(ev, DepthSnapshot):
            expected.on_snapshot(ev)
        elif isinstance(ev, DepthDiff):
            expected.on_diff(ev)
        elif isinstance(ev, Trades):
            trades += len(ev.trades)
    deltas = sum(b'"delta"' in raw for _, raw in frames)
    instance = unique_instance()
    try:
        with SimProcess(["--venue", "bybit", "--tape", str(tape), "--speed", "20"]) as sim:
            cfg = write_sim_config(tmp_path, instance, sim, market="linear",
                               symbols=["BTCUSDT"], exchange="bybit",
                               depth_stream="orderbook.50", trade_stream="publicTrade",
                               stream_timeout=60.0, silence_timeout=30.0)  # fmt: skip
            with IngestProcess(cfg, instance) as ingest:
                books = RecordLog(instance, ingest.books_ring, "book")
                trade_log = RecordLog(instance, ingest.trades_ring, "trade")
                ingest.wait_for(
                    "every delta and trade",
                    lambda c: c["book_records"] >= deltas + 1 and c["trades"] >= trades,
                    60,
                )
                recs = books.drain()
                assert len(trade_log.drain()) == trades
                assert ingest.counters()["gaps"] == 0
                assert (recs["flags"] & L.FLAG_SYNCED).all()
                last = recs[-1]
                bids = expected.book.bids()[:20]
                assert [tuple(x) for x in last["bids"][: len(bids)].tolist()] == bids
                asks = expected.book.asks()[:20]
                assert [tuple(x) for x in last["asks"][: len(asks)].tolist()] == asks
                books.close()
                trade_log.close()
                assert ingest.stop() == 0
    finally:
        remove_segments(instance)


def test_a_refused_topic_is_a_stream_fault_and_the_others_sync(tmp_path: Path) -> None:
    """XRPUSDT is not on this simulator: its three subscriptions are refused, named, counted."""
    instance = unique_instance()
    try:
        with SimProcess(["--venue", "bybit", "--symbols", "BTCUSDT", "--rate", "300"]) as sim:
            cfg = write_sim_config(tmp_path, instance, sim, market="linear",
                               symbols=["BTCUSDT", "XRPUSDT"],
                               exchange="bybit", depth_stream="orderbook.50",
                               trade_stream="publicTrade", stream_timeout=3.0,
                               tickers=True)  # fmt: skip
            with IngestProcess(cfg, instance) as ingest:
                # A refusal counts as a stream fault a moment before err_request_rejected.
                c = ingest.wait_for(
                    "BTCUSDT synced and XRPUSDT refused",
                    lambda c: (
                        c["g_books_synced"] == 1
                        and c["stream_faults"] >= 3
                        and c.get("err_request_rejected", 0) >= 3
                    ),
                    30,
                )
                assert c["err_request_rejected"] == 3 and c["parse_errors"] == 0
                # Refused streams are not reported again once stream_timeout (3 s: BTCUSDT's
                # streams deliver within it on a loaded machine too) has passed.
                later = time.monotonic() + 4.0
                c = ingest.wait_for("stream_timeout to pass", lambda c: time.monotonic() > later)
                assert c["stream_faults"] == 3 and "delivered nothing" not in ingest.log()
                log = ingest.log()
                assert "refused subscribe orderbook.50.XRPUSDT: error:handler not found" in log
                assert "refused subscribe publicTrade.XRPUSDT" in log
                assert "refused subscribe tickers.XRPUSDT" in log
                assert ingest.stop() == 0
    finally:
        remove_segments(instance)
