"""The exchange simulator, end to end: a real `mdpipe sim` process, real WebSocket and HTTP clients."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websocket

from mdpipe.sim.process import SimProcess
from mdpipe.venues import tapes

FUTURES_TAPE = tapes.tape_path(tapes.FUTURES_TAPE)
SPOT_TAPE = tapes.tape_path(tapes.SPOT_TAPE)

# Field order of every event, per market, as documented (binance.md).
FIELDS = {
    "futures": {
        "depthUpdate": ["e", "E", "T", "s", "U", "u", "pu", "b", "a"],
        "aggTrade": ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m"],
        "trade": ["e", "E", "T", "s", "t", "p", "q", "X", "m"],
        "bookTicker": ["e", "u", "E", "T", "s", "b", "B", "a", "A"],
        "markPriceUpdate": ["e", "E", "s", "p", "i", "P", "r", "T"],
    },
    "spot": {
        "depthUpdate": ["e", "E", "s", "U", "u", "b", "a"],
        "aggTrade": ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"],
        "trade": ["e", "E", "s", "t", "p", "q", "T", "m", "M"],
        "bookTicker": ["u", "s", "b", "B", "a", "A"],
    },
}
INT_FIELDS = {"E", "T", "U", "u", "pu", "t", "f", "l", "lastUpdateId"}
DECIMAL = re.compile(r"^\d+(\.\d+)?$")


# --- helpers -------------------------------------------------------------------------------


def connect(url: str, timeout: float = 10.0) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=timeout, skip_utf8_validation=True)


def messages(ws: websocket.WebSocket, n: int) -> Iterator[dict[str, Any]]:
    """The next `n` JSON messages."""
    for _ in range(n):
        yield orjson.loads(ws.recv())


def until(
    ws: websocket.WebSocket, pred: Callable[[dict[str, Any]], bool], limit: int = 20000
) -> dict[str, Any]:
    """The first message satisfying `pred` within `limit` messages."""
    for msg in messages(ws, limit):
        if pred(msg):
            return msg
    raise AssertionError("expected message never arrived")


def event_kind(data: dict[str, Any]) -> str:
    return data.get("e") or ("bookTicker" if "u" in data and "B" in data else "snapshot")


def check_event(market: str, data: dict[str, Any]) -> str:
    """Assert one payload matches the documented fields, order and types; returns its kind."""
    kind = event_kind(data)
    assert list(data) == FIELDS[market][kind], (kind, list(data))
    for key, value in data.items():
        if key in ("b", "a") and kind == "depthUpdate":
            for price, qty in value:
                assert DECIMAL.match(price) and float(price) > 0 and DECIMAL.match(qty)
        elif key in INT_FIELDS or (key, kind) == ("a", "aggTrade"):
            assert type(value) is int and value > 0, (kind, key, value)
        elif key in ("m", "M"):
            assert type(value) is bool, (kind, key, value)
        elif key in ("p", "q", "b", "B", "a", "A", "i", "P", "r"):
            assert DECIMAL.match(value), (kind, key, value)
    if kind == "bookTicker":
        assert float(data["b"]) < float(data["a"])
    if "T" in data and kind != "markPriceUpdate":
        assert data["T"] <= data["E"]
    return kind


def get_json(sim: SimProcess, path: str) -> tuple[int, dict[str, str], Any]:
    status, headers, body = sim.get(path)
    return status, headers, orjson.loads(body)


def best(levels: dict[str, str], bids: bool) -> tuple[str, str]:
    price = (max if bids else min)(levels, key=float)
    return price, levels[price]


class FuturesBook:
    """The minimal USD-M sync rules, written from binance.md for this test only."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.last: int | None = None
        self.synced = False
        self.buffer: list[dict[str, Any]] = []
        self.tops: dict[int, tuple[str, str, str, str]] = {}  # u -> best bid/ask after that diff
        self.gaps = 0

    def load(self, snap: dict[str, Any]) -> None:
        self.bids = dict(snap["bids"])
        self.asks = dict(snap["asks"])
        self.last = snap["lastUpdateId"]
        self.synced = False
        buffered, self.buffer = self.buffer, []
        for diff in buffered:
            self.on_diff(diff)

    def on_diff(self, d: dict[str, Any]) -> None:
        if self.last is None:
            self.buffer.append(d)
            return
        if not self.synced:
            if d["u"] < self.last:
                return
            assert d["U"] <= self.last <= d["u"], "first diff must straddle the snapshot"
            self.synced = True
        elif d["pu"] != self.last:
            self.gaps += 1
            self.last = None  # broken: wait for a new snapshot
            return
        for side, levels in ((self.bids, d["b"]), (self.asks, d["a"])):
            for price, qty in levels:
                if float(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.last = d["u"]
        bid, ask = best(self.bids, True), best(self.asks, False)
        assert float(bid[0]) < float(ask[0]), "crossed book"
        self.tops[d["u"]] = (*bid, *ask)


def compare_tickers(book: FuturesBook, tickers: dict[int, tuple[str, str, str, str]]) -> int:
    """Assert every bookTicker with a diff's u shows that diff's book top; returns pairs compared."""
    common = set(book.tops) & set(tickers)
    for u in common:
        assert book.tops[u] == tickers[u], (u, book.tops[u], tickers[u])
    return len(common)


def read_tape(path: Path) -> list[bytes]:
    return [raw for _, raw in tapes.read_tape(path)]


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> bool:
    """Poll `check` until true (server-side bookkeeping trails what the client sees)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def strip_times(msg: dict[str, Any]) -> dict[str, Any]:
    data = msg.get("data", msg)
    return {**msg, "data": {k: v for k, v in data.items() if k not in ("E", "T")}}


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def futures_sim() -> Iterator[SimProcess]:
    with SimProcess(["--rate", "8000", "--seed", "7", "--symbols", "BTCUSDT,ETHUSDT"]) as sim:
        yield sim


@pytest.fixture
def spot_sim() -> Iterator[SimProcess]:
    with SimProcess(["--market", "spot", "--rate", "8000", "--seed", "3"]) as sim:
        yield sim


@pytest.fixture
def fault_sim() -> Iterator[SimProcess]:
    with SimProcess(["--rate", "8000", "--seed", "11"]) as sim:
        yield sim


# --- formats -------------------------------------------------------------------------------


def test_futures_event_formats(futures_sim: SimProcess) -> None:
    public = connect(
        futures_sim.ws_url + "/public/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker"
        "/ethusdt@depth@100ms/btcusdt@depth5@100ms"
    )
    market = connect(
        futures_sim.ws_url
        + "/market/stream?streams=btcusdt@trade/btcusdt@aggTrade/btcusdt@markPrice@1s"
    )
    seen: dict[str, int] = {}
    for raw in (public.recv() for _ in range(600)):
        assert raw.startswith('{"stream":"') and '","data":{' in raw and " " not in raw
        msg = orjson.loads(raw)
        assert list(msg) == ["stream", "data"]
        seen[msg["stream"]] = seen.get(msg["stream"], 0) + 1
        check_event("futures", msg["data"])
        if msg["stream"] == "btcusdt@depth5@100ms":
            assert len(msg["data"]["b"]) == 5 and len(msg["data"]["a"]) == 5
    assert set(seen) == {
        "btcusdt@depth@0ms",
        "btcusdt@bookTicker",
        "ethusdt@depth@100ms",
        "btcusdt@depth5@100ms",
    }
    kinds = set()
    deadline = time.monotonic() + 10
    while kinds != {"trade", "aggTrade", "markPriceUpdate"} and time.monotonic() < deadline:
        msg = orjson.loads(market.recv())
        kinds.add(check_event("futures", msg["data"]))
        if msg["stream"] == "btcusdt@trade":
            assert msg["data"]["X"] == "MARKET"
    assert kinds == {"trade", "aggTrade", "markPriceUpdate"}
    public.close()
    market.close()

    status, headers, snap = get_json(futures_sim, "/fapi/v1/depth?symbol=BTCUSDT&limit=10")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert list(snap) == ["lastUpdateId", "E", "T", "bids", "asks"]
    assert len(snap["bids"]) == len(snap["asks"]) == 10
    prices = [float(p) for p, _ in snap["bids"]]
    assert prices == sorted(prices, reverse=True) and float(snap["bids"][0][0]) < float(
        snap["asks"][0][0]
    )
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) >= 2
    status, _, body = get_json(futures_sim, "/fapi/v1/depth?symbol=NOPEUSDT&limit=10")
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    status, _, body = get_json(futures_sim, "/fapi/v1/depth?symbol=BTCUSDT&limit=7")
    assert status == 400 and body["code"] == -1130
    status, _, body = get_json(futures_sim, "/fapi/v1/depth?limit=5")
    assert status == 400 and body["code"] == -1102
    assert get_json(futures_sim, "/api/v3/depth?symbol=BTCUSDT")[0] == 404  # spot path on futures


def test_spot_event_formats(spot_sim: SimProcess) -> None:
    ws = connect(
        spot_sim.ws_url + "/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker/btcusdt@trade"
        "/btcusdt@aggTrade/ethusdt@depth5@100ms"
    )
    kinds: dict[str, int] = {}
    for msg in messages(ws, 1500):
        if msg["stream"] == "ethusdt@depth5@100ms":
            assert list(msg["data"]) == ["lastUpdateId", "bids", "asks"]
            assert len(msg["data"]["bids"]) == 5
            continue
        kind = check_event("spot", msg["data"])
        kinds[kind] = kinds.get(kind, 0) + 1
        # Spot prints every price and quantity with 8 decimals.
        if kind == "trade":
            assert len(msg["data"]["p"].split(".")[1]) == 8 and msg["data"]["M"] is True
    assert set(kinds) == {"depthUpdate", "bookTicker", "trade", "aggTrade"}
    ws.close()
    raw = connect(spot_sim.ws_url + "/ws/btcusdt@bookTicker")
    assert list(orjson.loads(raw.recv())) == FIELDS["spot"]["bookTicker"]  # raw route: no envelope
    raw.close()

    status, _, snap = get_json(spot_sim, "/api/v3/depth?symbol=ETHUSDT&limit=6000")
    assert status == 200 and list(snap) == ["lastUpdateId", "bids", "asks"]
    assert 20 < len(snap["bids"]) < 5000  # the whole book: limit is truncated to 5000, not refused
    assert get_json(spot_sim, "/api/v3/depth?symbol=ETH")[0] == 400
    assert get_json(spot_sim, "/fapi/v1/depth?symbol=ETHUSDT")[0] == 404


def test_wrong_route_streams_are_accepted_and_never_delivered(futures_sim: SimProcess) -> None:
    public = connect(futures_sim.ws_url + "/public/stream?streams=btcusdt@trade/btcusdt@bookTicker")
    market = connect(futures_sim.ws_url + "/market/stream?streams=btcusdt@depth@0ms/btcusdt@trade")
    assert {m["stream"] for m in messages(public, 300)} == {"btcusdt@bookTicker"}
    assert {m["stream"] for m in messages(market, 150)} == {"btcusdt@trade"}
    public.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
    listed = until(public, lambda m: m.get("id") == 1)
    assert listed == {"result": ["btcusdt@trade", "btcusdt@bookTicker"], "id": 1}
    public.close()
    market.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        connect(futures_sim.ws_url + "/stream?streams=btcusdt@trade")  # the retired futures URL
    assert err.value.status_code == 404


def test_control_messages(futures_sim: SimProcess) -> None:
    ws = connect(futures_sim.ws_url + "/ws")
    ws.send('{"method":"SUBSCRIBE","params":["ethusdt@bookTicker","ethusdt@depth@0ms"],"id":1}')
    assert orjson.loads(ws.recv()) == {"result": None, "id": 1}  # the reply precedes the data
    assert {event_kind(m) for m in messages(ws, 200)} == {"bookTicker", "depthUpdate"}
    ws.send('{"method":"UNSUBSCRIBE","params":["ethusdt@depth@0ms"],"id":2}')
    until(ws, lambda m: m.get("id") == 2)
    assert {event_kind(m) for m in messages(ws, 100)} == {"bookTicker"}
    ws.send('{"method":"SET_PROPERTY","params":["combined",true],"id":3}')
    until(ws, lambda m: m.get("id") == 3)
    assert next(messages(ws, 1))["stream"] == "ethusdt@bookTicker"
    ws.send('{"method":"GET_PROPERTY","params":["combined"],"id":4}')
    assert until(ws, lambda m: m.get("id") == 4)["result"] is True
    ws.send('{"method":"LIST_SUBSCRIPTIONS","id":5}')
    assert until(ws, lambda m: m.get("id") == 5)["result"] == ["ethusdt@bookTicker"]
    ws.send('{"method":"FETCH","params":[],"id":6}')
    assert until(ws, lambda m: m.get("id") == 6)["code"] == 2
    ws.send("{not json")
    assert until(ws, lambda m: "code" in m and "id" not in m)["code"] == 3
    # More than 10 requests within a second: the exchange disconnects (code 1008).
    for i in range(12):
        ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 100 + i}))
    assert close_code(ws) == 1008


# --- synthetic market correctness ------------------------------------------------------------


def test_update_ids_are_continuous(futures_sim: SimProcess, spot_sim: SimProcess) -> None:
    ws = connect(
        futures_sim.ws_url
        + "/public/stream?streams=btcusdt@depth@0ms/ethusdt@depth@0ms/btcusdt@depth@100ms"
    )
    last: dict[str, int] = {}
    jumps = 0
    for msg in messages(ws, 2000):
        d = msg["data"]
        assert d["U"] <= d["u"]
        if msg["stream"] in last:
            assert d["pu"] == last[msg["stream"]], msg["stream"]
            jumps += d["U"] > d["pu"] + 1
        last[msg["stream"]] = d["u"]
    assert jumps > 1000  # ids jump between diffs, as on the real exchange
    ws.close()
    ws = connect(spot_sim.ws_url + "/stream?streams=btcusdt@depth@100ms/ethusdt@depth")
    last = {}
    for msg in messages(ws, 25):
        d = msg["data"]
        if msg["stream"] in last:
            assert d["U"] == last[msg["stream"]] + 1
        last[msg["stream"]] = d["u"]
    ws.close()


def test_futures_sync_rules_give_books_matching_every_book_ticker(futures_sim: SimProcess) -> None:
    ws = connect(
        futures_sim.ws_url + "/public/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker"
        "/ethusdt@depth@0ms/ethusdt@bookTicker"
    )
    books = {"BTCUSDT": FuturesBook(), "ETHUSDT": FuturesBook()}
    tickers: dict[str, dict[int, tuple[str, str, str, str]]] = {s: {} for s in books}
    for i, msg in enumerate(messages(ws, 9000)):
        d = msg["data"]
        if d["e"] == "depthUpdate":
            books[d["s"]].on_diff(d)
        else:
            tickers[d["s"]][d["u"]] = (d["b"], d["B"], d["a"], d["A"])
        if i in (200, 4000):  # snapshot after buffering, and once more mid-stream
            for symbol, book in books.items():
                if i == 4000:
                    book.last = None
                status, _, snap = get_json(
                    futures_sim, f"/fapi/v1/depth?symbol={symbol}&limit=1000"
                )
                assert status == 200
                book.load(snap)
    ws.close()
    compared = sum(compare_tickers(books[s], tickers[s]) for s in books)
    # Every pair compared must agree; how many pairs share an update id depends on the
    # machine's speed (651 of 9,000 messages on a starved one), so the floor is a sample.
    assert compared > 200
    assert all(book.gaps == 0 for book in books.values())


def test_trades_are_consistent_with_the_book(spot_sim: SimProcess) -> None:
    ws = connect(
        spot_sim.ws_url + "/stream?streams=btcusdt@bookTicker/btcusdt@trade/btcusdt@aggTrade"
    )
    top: tuple[float, float] | None = None
    trades: dict[int, dict[str, Any]] = {}
    aggs: list[dict[str, Any]] = []
    checked = 0
    for msg in messages(ws, 6000):
        d = msg["data"]
        if msg["stream"].endswith("bookTicker"):
            top = (float(d["b"]), float(d["a"]))
        elif d["e"] == "trade":
            trades[d["t"]] = d
            if top is not None:
                # m: buyer is maker, so the seller hit the bids; otherwise a buyer lifted the asks.
                assert float(d["p"]) <= top[0] if d["m"] else float(d["p"]) >= top[1]
                checked += 1
        else:
            aggs.append(d)
    ws.close()
    assert checked > 50
    complete = [a for a in aggs if all(t in trades for t in range(a["f"], a["l"] + 1))]
    assert len(complete) > 20
    for agg in complete:
        parts = [trades[t] for t in range(agg["f"], agg["l"] + 1)]
        assert {p["p"] for p in parts} == {agg["p"]} and {p["m"] for p in parts} == {agg["m"]}
        assert abs(sum(float(p["q"]) for p in parts) - float(agg["q"])) < 1e-9


def first_messages(args: list[str], n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with SimProcess(args) as sim:
        snap = get_json(sim, "/fapi/v1/depth?symbol=ETHUSDT&limit=50")[2]
        ws = connect(
            sim.ws_url
            + "/public/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker/ethusdt@depth@0ms"
        )
        got = [strip_times(m) for m in messages(ws, n)]
        ws.close()
    return {k: v for k, v in snap.items() if k not in ("E", "T")}, got


def test_seed_determines_the_market() -> None:
    args = ["--rate", "4000", "--symbols", "BTCUSDT,ETHUSDT,SOLUSDT"]
    snap_a, run_a = first_messages([*args, "--seed", "42"], 400)
    snap_b, run_b = first_messages([*args, "--seed", "42"], 400)
    snap_c, run_c = first_messages([*args, "--seed", "43"], 400)
    assert snap_a == snap_b and run_a == run_b
    assert snap_a != snap_c and run_a != run_c


# --- faults --------------------------------------------------------------------------------


def close_code(ws: websocket.WebSocket, limit: int = 100000) -> int | None:
    """Read until the connection ends: the close frame's code, or None if dropped without one."""
    try:
        for _ in range(limit):
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big")
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return None
    raise AssertionError("connection stayed open")


def test_gap_fault_breaks_one_symbols_sequence(fault_sim: SimProcess) -> None:
    ws = connect(
        fault_sim.ws_url
        + "/public/stream?streams=btcusdt@depth@0ms/ethusdt@depth@0ms/btcusdt@depth@100ms"
    )
    last: dict[str, int] = {}
    gaps: dict[str, int] = {}
    windows_after = -1
    for msg in messages(ws, 50000):
        d = msg["data"]
        if msg["stream"] in last and d["pu"] != last[msg["stream"]]:
            assert d["pu"] > last[msg["stream"]]  # one diff missing, not a reordering
            gaps[msg["stream"]] = gaps.get(msg["stream"], 0) + 1
        last[msg["stream"]] = d["u"]
        if msg["stream"] == "btcusdt@depth@100ms":
            if windows_after < 0:  # both streams have delivered: now skip one BTCUSDT diff
                assert fault_sim.inject("gap", symbol="BTCUSDT")["symbol"] == "BTCUSDT"
            windows_after += 1
            if windows_after == 4:
                break
    ws.close()
    assert gaps == {"btcusdt@depth@0ms": 1, "btcusdt@depth@100ms": 1}


def is_valid(msg: bytes | str, stream: str) -> str:
    """'' for a good depth diff on `stream`, else the defect's name."""
    if len(msg) > 1 << 20:
        return "oversized"
    try:
        env = orjson.loads(msg)
    except orjson.JSONDecodeError:
        return "truncated"
    if env.get("stream") != stream:
        return "unknown_stream"
    d = env["data"]
    if not all(k in d for k in FIELDS["futures"]["depthUpdate"]):
        return "missing_field"
    if not isinstance(d["u"], int) or not isinstance(d["b"], list):
        return "wrong_type"
    for price, _ in d["b"] + d["a"]:
        if not DECIMAL.match(price):
            return "negative_price" if price.startswith("-") else "nan_price"
    return ""


def test_malformed_fault_sends_every_kind_of_bad_message(fault_sim: SimProcess) -> None:
    ws = connect(fault_sim.ws_url + "/public/stream?streams=ethusdt@depth@0ms")
    for _ in range(50):
        ws.recv()
    done = fault_sim.inject("malformed")
    assert done["connections"] >= 1 and len(done["variants"]) == 7
    defects: list[str] = []
    last = None
    for _ in range(3000):
        raw = ws.recv()
        defect = is_valid(raw, "ethusdt@depth@0ms")
        if defect:
            defects.append(defect)
            continue
        d = orjson.loads(raw)["data"]
        if last is not None:
            assert d["pu"] == last  # bad messages never stand in for a real diff
        last = d["u"]
        if len(defects) == 7:
            break
    ws.close()
    assert sorted(defects) == sorted(done["variants"])


def test_silence_fault_keeps_the_connection_open(fault_sim: SimProcess) -> None:
    ws = connect(fault_sim.ws_url + "/public/stream?streams=btcusdt@bookTicker/btcusdt@depth@0ms")
    ws.recv()
    # Long enough to drain what was in flight (8000 messages/s) on a loaded machine first.
    fault_sim.inject("silence", seconds=5)
    ws.settimeout(0.7)
    with pytest.raises(websocket.WebSocketTimeoutException):
        for _ in range(10000):  # drain what was in flight, then nothing comes
            ws.recv()
    ws.settimeout(15.0)
    assert orjson.loads(ws.recv())["stream"].startswith("btcusdt@")  # same connection resumes
    ws.close()


@pytest.mark.parametrize("variant,code", [("abrupt", None), ("close", 1001)])
def test_disconnect_fault(fault_sim: SimProcess, variant: str, code: int | None) -> None:
    ws = connect(fault_sim.ws_url + "/public/stream?streams=btcusdt@bookTicker")
    ws.recv()
    assert fault_sim.inject("disconnect", variant=variant)["connections"] >= 1
    assert close_code(ws) == code
    again = connect(fault_sim.ws_url + "/public/stream?streams=btcusdt@bookTicker")
    assert orjson.loads(again.recv())["stream"] == "btcusdt@bookTicker"
    again.close()
    assert eventually(lambda: fault_sim.stats()["connections"]["closed"].get("fault_disconnect"))


def test_shutdown_fault_announces_then_closes(fault_sim: SimProcess) -> None:
    ws = connect(fault_sim.ws_url + "/ws/btcusdt@trade")
    fault_sim.inject("shutdown", seconds=0.2)
    event = until(ws, lambda m: m.get("e") == "serverShutdown")
    assert list(event) == ["e", "E"] and isinstance(event["E"], int)
    assert close_code(ws) == 1001


def test_rest_faults(fault_sim: SimProcess) -> None:
    path = "/fapi/v1/depth?symbol=BTCUSDT&limit=5"
    for kind, status in (
        ("rest_429", 429),
        ("rest_418", 418),
        ("rest_451", 451),
        ("rest_500", 500),
    ):
        fault_sim.inject(kind, count=1, retry_after=7)
        got, headers, body = get_json(fault_sim, path)
        assert got == status and isinstance(body["code"], int) and body["msg"]
        if status in (429, 418):
            assert headers["Retry-After"] == "7"
        assert get_json(fault_sim, path)[0] == 200  # the window was one request
    fault_sim.inject("rest_500", seconds=3)
    assert [get_json(fault_sim, path)[0] for _ in range(3)] == [500, 500, 500]
    assert eventually(lambda: get_json(fault_sim, path)[0] == 200, timeout=15)  # window over
    fault_sim.inject("rest_slow", delay=0.5)
    t0 = time.monotonic()
    assert get_json(fault_sim, path)[0] == 200
    assert time.monotonic() - t0 >= 0.45
    by_status = fault_sim.stats()["rest"]["by_status"]
    assert {"200", "418", "429", "451", "500"} <= set(by_status)
    with pytest.raises(Exception, match="400"):
        fault_sim.inject("gap", symbol="NOPEUSDT")


def test_command_line_fault_schedule_is_deterministic() -> None:
    args = [
        "--rate",
        "8000",
        "--seed",
        "5",
        "--fault",
        "gap:every=0.2s",
        "--fault",
        "rest_429:at=0s",
    ]
    runs = []
    for _ in range(2):
        with SimProcess(args) as sim:
            ws = connect(sim.ws_url + "/public/stream?streams=btcusdt@depth@0ms/ethusdt@depth@0ms")
            last: dict[str, int] = {}
            gaps = []
            for msg in messages(ws, 5000):
                d = msg["data"]
                if msg["stream"] in last and d["pu"] != last[msg["stream"]]:
                    gaps.append((d["s"], d["pu"]))  # which symbol, and the skipped diff's u
                last[msg["stream"]] = d["u"]
            ws.close()
            assert get_json(sim, "/fapi/v1/depth?symbol=BTCUSDT&limit=5")[0] == 429
            assert sim.stats()["faults"]["gap"] >= len(gaps) >= 2
            runs.append(gaps)
    assert runs[0] == runs[1]


def test_ping_timeout_and_connection_age() -> None:
    # The pong timeout leaves room for a test process that a loaded machine did not schedule.
    with SimProcess(["--rate", "50", "--ping-interval", "0.25", "--ping-timeout", "3"]) as sim:
        silent = connect(sim.ws_url + "/public/stream?streams=btcusdt@bookTicker")
        live = connect(sim.ws_url + "/public/stream?streams=btcusdt@bookTicker")

        def ping_timeouts() -> int:
            return sim.stats()["connections"]["closed"].get("ping_timeout", 0)

        # Read `live` (reading answers pings: websocket-client pongs itself) until the server
        # has dropped `silent`; reading `silent` before that would answer its pings too.
        pings, dropped, asked = 0, 0, 0.0
        deadline = time.monotonic() + 30
        while pings < 2 or not dropped:
            assert time.monotonic() < deadline, f"{pings} pings, silent still open"
            opcode, _ = live.recv_data(control_frame=True)
            pings += opcode == websocket.ABNF.OPCODE_PING
            if time.monotonic() - asked > 0.2:
                dropped, asked = ping_timeouts(), time.monotonic()
        assert live.connected
        assert close_code(silent) in (1011, None)  # never read, never ponged: closed
        assert eventually(lambda: sim.stats()["connections"]["closed"].get("ping_timeout") == 1)
        live.close()
    with SimProcess(["--rate", "50", "--max-connection-age", "1s"]) as sim:
        ws = connect(sim.ws_url + "/market/stream?streams=btcusdt@trade")
        assert close_code(ws) == 1001
        assert eventually(lambda: sim.stats()["connections"]["closed"].get("max_age") == 1)


def test_a_client_that_falls_too_far_behind_is_dropped() -> None:
    with SimProcess(["--rate", "20000", "--max-send-buffer", "65536"]) as sim:
        ws = connect(sim.ws_url + "/ws/btcusdt@depth@0ms/btcusdt@bookTicker/btcusdt@trade")
        ws.recv()  # then stop reading while the exchange keeps publishing
        assert eventually(lambda: sim.stats()["messages"]["slow_clients_dropped"] == 1, 20)
        assert close_code(ws) is None  # aborted: no close frame after the backlog
        assert eventually(lambda: sim.stats()["connections"]["closed"].get("slow_client") == 1)


# --- tape replay ---------------------------------------------------------------------------


def read_n(ws: websocket.WebSocket, n: int, out: list[str]) -> None:
    for _ in range(n):
        out.append(ws.recv())


def test_tape_serves_recorded_bytes_in_order_on_the_right_routes() -> None:
    tape = read_tape(FUTURES_TAPE)
    public_lines = [
        r.decode()
        for r in tape
        if b'"stream":"btcusdt@depth@0ms"' in r or b'"stream":"btcusdt@bookTicker"' in r
    ]
    trade_lines = [r.decode() for r in tape if b'"stream":"btcusdt@trade"' in r]
    prefix = len('{"stream":"btcusdt@bookTicker","data":')
    ticker_payloads = [
        r[prefix:-1] for r in public_lines if r.startswith('{"stream":"btcusdt@book')
    ]
    with SimProcess(["--tape", str(FUTURES_TAPE), "--max", "--start-clients", "3"]) as sim:
        urls = [
            "/public/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker/btcusdt@trade",
            "/market/stream?streams=btcusdt@trade/btcusdt@bookTicker",
            "/public/ws/btcusdt@bookTicker",  # raw route: the recorded payload alone
        ]
        wanted = (20000, 5000, 3000)
        got: list[list[str]] = [[], [], []]
        # --max paces the replay by its slowest reader, so all three read concurrently.
        readers = [
            threading.Thread(target=read_n, args=(connect(sim.ws_url + url), n, out))
            for url, n, out in zip(urls, wanted, got, strict=True)
        ]
        for t in readers:
            t.start()
        for t in readers:
            t.join(30)
        assert got[0] == public_lines[:20000]
        assert got[1] == trade_lines[:5000]
        assert got[2] == ticker_payloads[:3000]
        stats = sim.stats()
        assert stats["mode"] == "tape" and stats["market"] == "futures"


def test_tape_rest_snapshot_is_rebuilt_consistently_with_the_diffs() -> None:
    with SimProcess(["--tape", str(FUTURES_TAPE), "--speed", "40"]) as sim:
        early: list[tuple[int, dict[str, str], bytes]] = []
        asker = threading.Thread(
            target=lambda: early.append(sim.get("/fapi/v1/depth?symbol=BTCUSDT&limit=1000"))
        )
        asker.start()  # before the replay has started: the answer waits for the tape's snapshot
        ws = connect(sim.ws_url + "/public/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker")
        book = FuturesBook()
        tickers: dict[int, tuple[str, str, str, str]] = {}
        mid_snapshot: dict[str, Any] | None = None
        # Read 24,000 messages, and on until the book has passed the mid-replay snapshot: on a
        # loaded machine this client can trail the server by more than 12,000 messages.
        for i, msg in enumerate(messages(ws, 200_000)):
            d = msg["data"]
            if d["e"] == "depthUpdate":
                book.on_diff(d)
            else:
                tickers[d["u"]] = (d["b"], d["B"], d["a"], d["A"])
            if i >= 24000 and book.last is not None and book.last >= mid_snapshot["lastUpdateId"]:
                break
            if i == 500:
                asker.join(10)
                status, _, body = early[0]
                assert status == 200
                book.load(orjson.loads(body))
            if i == 12000:
                mid_snapshot = get_json(sim, "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")[2]
        ws.close()
        assert compare_tickers(book, tickers) > 100 and book.gaps == 0
        # The snapshot taken mid-replay is the book after the diff carrying its lastUpdateId.
        assert mid_snapshot is not None and mid_snapshot["lastUpdateId"] in book.tops
        snap_bid, snap_ask = mid_snapshot["bids"][0], mid_snapshot["asks"][0]
        assert book.tops[mid_snapshot["lastUpdateId"]] == (*snap_bid, *snap_ask)
        assert sim.stats()["source"]["books"]["BTCUSDT"]["sync_errors"] == 0


def test_spot_tape_is_detected_and_replayed() -> None:
    tape = [r.decode() for r in read_tape(SPOT_TAPE) if r.startswith(b'{"stream"')]
    with SimProcess(["--tape", str(SPOT_TAPE), "--max", "--start-clients", "2"]) as sim:
        with pytest.raises(websocket.WebSocketBadStatusException):
            connect(sim.ws_url + "/public/stream?streams=btcusdt@bookTicker")  # futures route
        combined = connect(
            sim.ws_url + "/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker/btcusdt@trade"
        )
        raw = connect(sim.ws_url + "/ws/btcusdt@trade")
        got: list[str] = []
        trades: list[str] = []
        readers = [
            threading.Thread(target=read_n, args=(combined, 8000, got)),
            threading.Thread(target=read_n, args=(raw, 1000, trades)),
        ]
        for t in readers:
            t.start()
        for t in readers:
            t.join(30)
        assert got == tape[:8000]
        recorded_trades = [line for line in tape if line.startswith('{"stream":"btcusdt@trade"')]
        assert trades == [
            line[len('{"stream":"btcusdt@trade","data":') : -1] for line in recorded_trades[:1000]
        ]
        status, _, snap = get_json(sim, "/api/v3/depth?symbol=BTCUSDT&limit=5000")
        assert status == 200 and list(snap) == ["lastUpdateId", "bids", "asks"]
        assert get_json(sim, "/api/v3/depth?symbol=ETHUSDT")[0] == 400
        assert sim.stats()["market"] == "spot"


def test_tape_faults_and_no_snapshot() -> None:
    with SimProcess(["--tape", str(FUTURES_TAPE), "--speed", "20", "--no-snapshot"]) as sim:
        ws = connect(sim.ws_url + "/public/stream?streams=btcusdt@depth@0ms")
        last = None
        gaps = after = 0
        # The gap lands on what the server sends next, which can be thousands of diffs past
        # what this client has read when a loaded machine lets it trail: read on to it.
        for i, msg in enumerate(messages(ws, 6000)):
            if i == 100:
                sim.inject("gap")
            d = msg["data"]
            gaps += last is not None and d["pu"] != last
            last = d["u"]
            after += gaps > 0
            if after == 300:
                break
        assert gaps == 1 and after == 300
        assert [get_json(sim, "/fapi/v1/depth?symbol=BTCUSDT&limit=5")[0] for _ in range(2)] == [
            503,
            503,
        ]
        sim.inject("disconnect")
        assert close_code(ws) is None
        assert sim.stats()["source"]["skipped_by_gap"] == 1
