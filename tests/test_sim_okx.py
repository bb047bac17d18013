"""The OKX simulator (`mdpipe sim --venue okx`) speaks OKX v5 public as documented: paths,
subscribe acks and error codes, text ping, idle close, op and connection limits, REST books
and instruments, `bbo-tbt` equal to the `books` book at the same seqId."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
import websocket

from mdpipe.sim.process import SimProcess, SimProcessError
from mdpipe.venues.local_book import LocalBook
from mdpipe.venues.okx.parser import OkxParser, parse_rest_books
from mdpipe.venues.okx.sync import OkxBookSync

SWAP = ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    args = ["--venue", "okx", "--rate", "500", "--okx-books-ms", "20", "--okx-idle-close", "2"]
    with SimProcess([*args, "--okx-max-ops", "6", "--okx-connect-rate", "50"]) as s:
        yield s


def connect(sim: SimProcess, path: str = "/ws/v5/public") -> websocket.WebSocket:
    return websocket.create_connection(sim.ws_url + path, timeout=10)


def send(ws: websocket.WebSocket, op: str, *args: tuple[str, str], rid: str = "r1") -> None:
    body = {"id": rid, "op": op, "args": [{"channel": c, "instId": i} for c, i in args]}
    ws.send(orjson.dumps(body).decode())


def recv(ws: websocket.WebSocket) -> dict:
    raw = ws.recv()
    return {"text": raw} if raw == "pong" else orjson.loads(raw)


def next_event(ws: websocket.WebSocket) -> dict:
    """The next frame that is not a data push."""
    while True:
        msg = recv(ws)
        if "data" not in msg:
            return msg


def test_subscribe_acks_snapshot_and_pong(sim: SimProcess) -> None:
    ws = connect(sim)
    try:
        send(ws, "subscribe", ("books", SWAP[0]), ("trades", SWAP[0]), rid="a1")
        ack = recv(ws)
        assert ack["id"] == "a1" and ack["event"] == "subscribe" and ack["connId"]
        assert ack["arg"] == {"channel": "books", "instId": SWAP[0]}
        snap = recv(ws)
        assert snap["action"] == "snapshot" and snap["data"][0]["prevSeqId"] == -1
        d = snap["data"][0]
        assert 300 <= len(d["bids"]) <= 400 and len(d["bids"][0]) == 4 and d["checksum"] == 0
        assert recv(ws)["arg"] == {"channel": "trades", "instId": SWAP[0]}
        ws.send("ping")
        while recv(ws).get("text") != "pong":
            pass
    finally:
        ws.close()


@pytest.mark.parametrize(
    ("path", "channel", "inst", "code"),
    [
        ("/ws/v5/public", "candle1m", SWAP[0], "64001"),
        ("/ws/v5/public", "books-l2-tbt", SWAP[0], "64003"),
        ("/ws/v5/public", "books", "DOGE-USDT-SWAP", "60018"),
        ("/ws/v5/public", "tickerz", SWAP[0], "60018"),
        ("/ws/v5/business", "books", SWAP[0], "60018"),
    ],
)
def test_documented_error_codes(sim: SimProcess, path: str, channel: str, inst: str, code: str):
    ws = connect(sim, path)
    try:
        send(ws, "subscribe", (channel, inst), rid="e1")
        err = next_event(ws)
        assert err["event"] == "error" and err["code"] == code and err["id"] == "e1"
        ws.send("{not json")
        assert next_event(ws)["code"] == "60012"
        ws.send(orjson.dumps({"op": "subscribe", "args": [{"channel": "books", "x": 1}] * 3000}))
        assert next_event(ws)["code"] == "60012"  # over 64 KB
    finally:
        ws.close()


def test_subscribe_ops_per_hour_are_limited(sim: SimProcess) -> None:
    ws = connect(sim)
    try:
        for n in range(6):
            send(ws, "subscribe" if n % 2 == 0 else "unsubscribe", ("trades", SWAP[1]))
            assert next_event(ws)["event"] in ("subscribe", "unsubscribe")
        send(ws, "subscribe", ("trades", SWAP[1]), rid="x7")
        err = next_event(ws)
        assert err["code"] == "60012" and "ops" in err["msg"] and err["id"] == "x7"
    finally:
        ws.close()


def test_idle_connection_is_closed_with_4004(sim: SimProcess) -> None:
    ws = connect(sim)
    ws.settimeout(15)
    try:
        opcode, frame = ws.recv_data(control_frame=True)  # nothing subscribed: only the close
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame[:2], "big") == 4004 and b"30s" in frame[2:]
    finally:
        ws.close()
    deadline = time.monotonic() + 10
    while sim.stats()["connections"]["closed"].get("idle", 0) < 1:
        assert time.monotonic() < deadline, sim.stats()["connections"]
        time.sleep(0.05)


def test_rest_books_and_instruments(sim: SimProcess) -> None:
    status, _, body = sim.get(f"/api/v5/market/books?instId={SWAP[0]}&sz=400")
    assert status == 200
    snap = parse_rest_books(body)
    assert 300 <= len(snap.bid_prices) <= 400 and snap.last_update_id > 0
    assert snap.bid_prices[0] < snap.ask_prices[0]
    assert orjson.loads(sim.get(f"/api/v5/market/books?instId={SWAP[0]}")[2])["data"][0]["bids"]
    for query, code in (
        ("instId=NOPE-USDT-SWAP&sz=5", "51001"),
        (f"instId={SWAP[0]}&sz=401", "51000"),
    ):
        status, _, body = sim.get(f"/api/v5/market/books?{query}")
        assert status == 200 and orjson.loads(body)["code"] == code
    status, _, body = sim.get("/api/v5/public/instruments?instType=SWAP")
    inst = {i["instId"]: i for i in orjson.loads(body)["data"]}
    assert inst[SWAP[0]]["ctVal"] == "0.01" and inst[SWAP[0]]["tickSz"] == "0.1"
    assert sim.get("/api/v5/nothing")[0] == 404


def test_a_fault_okx_has_no_counterpart_for_is_refused_by_name(sim: SimProcess) -> None:
    """`restart` (a Bybit in-band book restart) is a 400 naming the kind, not a server error."""
    with pytest.raises(SimProcessError, match=r"\(400\).*restart is not a fault of the okx"):
        sim.inject("restart")
    assert sim.inject("gap", symbol=SWAP[0])["count"] == 1


def test_bbo_tbt_equals_the_books_book_at_the_same_seq_id(sim: SimProcess) -> None:
    ws = connect(sim)
    parser = OkxParser()
    local = LocalBook(OkxBookSync(), SWAP[0])
    bbo: dict[int, tuple[float, float]] = {}
    compared = 0
    try:
        send(ws, "subscribe", ("bbo-tbt", SWAP[0]), ("books", SWAP[0]))
        deadline = time.monotonic() + 20
        while compared < 30 and time.monotonic() < deadline:
            raw = ws.recv()
            ev = parser.parse(raw.encode())
            kind = type(ev).__name__
            if kind == "BookTicker":
                bbo[ev.update_id] = (ev.bid_price, ev.ask_price)
            elif kind == "DepthSnapshot":
                local.on_snapshot(ev)
            elif kind == "DepthDiff":
                local.on_diff(ev)
                assert local.synced
                if ev.last_id in bbo:
                    assert (local.book.best_bid()[0], local.book.best_ask()[0]) == bbo[ev.last_id]
                    compared += 1
        assert compared >= 30
    finally:
        ws.close()


def test_legacy_mode_checksums_hold_and_some_updates_lack_seq_id() -> None:
    args = ["--venue", "okx", "--rate", "500", "--okx-books-ms", "20", "--okx-legacy"]
    with SimProcess(args) as s:
        ws = websocket.create_connection(s.ws_url + "/ws/v5/public", timeout=10)
        parser = OkxParser()
        sync = OkxBookSync()
        local = LocalBook(sync, SWAP[0])
        seqless = 0
        try:
            send(ws, "subscribe", ("books", SWAP[0]))
            while sync.checksums_checked < 100:
                raw = ws.recv()
                ev = parser.parse(raw.encode())
                if type(ev).__name__ == "DepthSnapshot":
                    local.on_snapshot(ev)
                elif type(ev).__name__ == "DepthDiff":
                    seqless += ev.last_id == 0
                    local.on_diff(ev)
                    assert local.synced, sync.reason
        finally:
            ws.close()
        assert seqless >= 1 and sync.checksum_failures == 0


def test_more_than_three_new_connections_a_second_are_refused() -> None:
    with SimProcess(["--venue", "okx", "--rate", "50"]) as s:
        outcomes = []
        for _ in range(10):
            try:
                websocket.create_connection(s.ws_url + "/ws/v5/public", timeout=10).close()
                outcomes.append(101)
            except websocket.WebSocketBadStatusException as exc:
                outcomes.append(exc.status_code)
        assert 429 in outcomes and outcomes[:3] == [101, 101, 101]
        assert s.stats()["requests"]["handshakes_refused"] == outcomes.count(429)
