"""The whole market's rules without sockets: Binance's connection plan, message pacing,
the REST weight budget; and the simulator's enforcement of the same limits."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import orjson
import pytest
import websocket

from mdpipe.ingest.backoff import Backoff
from mdpipe.ingest.connection import Connection
from mdpipe.ingest.runtime import resubscribe_frames
from mdpipe.sim.instruments import universe
from mdpipe.sim.limits import MAX_URL_LENGTH, WeightLimiter
from mdpipe.sim.process import SimProcess
from mdpipe.venues.base import Action, DepthDiff, DepthSnapshot, SnapshotStatus
from mdpipe.venues.binance import limits
from mdpipe.venues.binance.sync import book_sync
from mdpipe.venues.binance.venue import BinanceVenue
from mdpipe.venues.binance.wire import BinanceParser
from mdpipe.venues.errors import FeedError
from mdpipe.venues.pacing import MessagePacer, WeightBudget


def _venue(n: int, market: str = "futures") -> BinanceVenue:
    return BinanceVenue(
        market, universe(n), ws_url="wss://fstream.example", rest_url="https://fapi.example"
    )


def _subscribed(frames: tuple[bytes, ...]) -> list[str]:
    out = []
    for frame in frames:
        msg = orjson.loads(frame)
        assert msg["method"] == "SUBSCRIBE"
        out += msg["params"]
    return out


@pytest.mark.parametrize(
    ("n", "market"), [(1, "futures"), (500, "futures"), (3000, "futures"), (700, "spot")]
)
def test_plan_stays_within_every_limit_and_carries_every_stream_once(n: int, market: str) -> None:
    routes = _venue(n, market).plan()
    carried: list[str] = []
    for route in routes:
        assert len(route.url) <= limits.URL_BUDGET
        assert len(route.streams) <= limits.MAX_STREAMS
        in_url = urlsplit(route.url).query.removeprefix("streams=").split("/")
        assert in_url and all(in_url)
        for frame in route.subscribe:
            assert len(frame) <= limits.SUBSCRIBE_MAX_BYTES
            assert len(orjson.loads(frame)["params"]) <= limits.SUBSCRIBE_MAX_PARAMS
        both = in_url + _subscribed(route.subscribe)
        assert sorted(both) == sorted(route.streams.values())
        assert 0 < route.send_rate < limits.INCOMING_RATE[market]
        carried += both
    per_symbol = 3 if market == "futures" else 2  # depth, aggTrade (+ markPrice on futures)
    assert len(carried) == len(set(carried)) == per_symbol * n


def test_the_plan_of_a_thousand_symbols_needs_subscribe_messages() -> None:
    routes = _venue(1000).plan()
    assert [r.name.partition("#")[0] for r in routes] == ["public", "market", "market"]
    assert all(r.subscribe for r in routes)
    # One connection's SUBSCRIBE messages go out within a few seconds at the paced rate.
    assert max(len(r.subscribe) for r in routes) / routes[0].send_rate < 5


def test_request_frames_split_by_params_and_bytes() -> None:
    streams = [f"{'x' * 60}{i}@aggTrade" for i in range(450)]
    frames = limits.request_frames("UNSUBSCRIBE", streams)
    assert [orjson.loads(f)["id"] for f in frames] == list(range(1, len(frames) + 1))
    params = [p for f in frames for p in orjson.loads(f)["params"]]
    assert params == streams
    assert all(len(f) <= limits.SUBSCRIBE_MAX_BYTES for f in frames)
    assert limits.request_frames("SUBSCRIBE", []) == ()


def test_runtime_streams_of_a_symbol_by_route() -> None:
    v = _venue(2)
    assert v.symbol_streams("BTCUSDT") == {
        "public": {("BTCUSDT", "depth"): "btcusdt@depth@100ms"},
        "market": {
            ("BTCUSDT", "trade"): "btcusdt@aggTrade",
            ("BTCUSDT", "mark"): "btcusdt@markPrice@1s",
        },
    }
    v.add_symbol("BTCUSDT")
    assert (
        v.recovery("BTCUSDT").url == "https://fapi.example/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
    )


def test_request_answers_are_acks() -> None:
    p = BinanceParser("futures")
    ok = p.parse(b'{"result":null,"id":7}')
    refused = p.parse(b'{"code":2,"msg":"Invalid request: too many parameters","id":8}')
    assert (ok.req_id, ok.ok) == ("7", True)
    assert (refused.req_id, refused.ok, refused.message) == (
        "8",
        False,
        "Invalid request: too many parameters",
    )


def test_message_pacer_allows_rate_per_second() -> None:
    pacer = MessagePacer(5)
    t = 100.0
    for _ in range(5):
        assert pacer.wait(t) == 0
        pacer.sent(t)
    assert pacer.wait(t) == pytest.approx(1.0)
    assert pacer.wait(t + 0.5) == pytest.approx(0.5)
    assert pacer.wait(t + 1.0) == 0
    pacer.reset()
    assert pacer.wait(t) == 0


def test_weight_budget_paces_within_the_share_of_the_minute() -> None:
    b = WeightBudget(2400, 20)  # 90%: 2160 a minute, 108 snapshots
    t = 6000.0  # the start of a minute
    sent = 0
    while b.wait(t) == 0:
        b.sent(t)
        b.answered(t, 200, (sent + 1) * 20, None)
        sent += 1
    assert sent == 108
    assert b.wait(t + 10) == pytest.approx(50.0)  # until the next minute
    assert b.wait(t + 60) == 0  # a fresh minute
    assert b.minimum_seconds(1000) == 8 * 60  # 120 a minute: 9 windows


def test_weight_budget_takes_the_venues_count_of_other_processes() -> None:
    b = WeightBudget(2400, 20)
    t = 6000.0
    b.sent(t)
    b.answered(t, 200, 2150, None)  # another process on this IP spent most of the minute
    assert b.wait(t + 1) > 0
    b.answered(t + 1, 200, 10, None)  # a lower count later in the same minute never lowers ours
    assert b.used == 2150


def test_weight_budget_honours_retry_after_of_429_and_418() -> None:
    b = WeightBudget(2400, 20)
    t = 6000.0
    b.answered(t, 429, None, 7.0)
    assert b.wait(t) == pytest.approx(7.0)
    assert b.wait(t + 7.0) == 0
    b.answered(t + 8, 418, None, 120.0)
    assert b.wait(t + 9) == pytest.approx(119.0)
    b.answered(t + 200, 429, None, None)  # no Retry-After: wait the default
    assert b.wait(t + 200) == pytest.approx(60.0)
    assert b.refusals == 3


def test_weight_budget_refuses_a_cost_that_never_fits() -> None:
    with pytest.raises(ValueError, match="never fits"):
        WeightBudget(10, 20)


def test_sim_weight_limiter_answers_429_then_bans_with_418() -> None:
    w = WeightLimiter(100, ban_seconds=120)
    t = 6000.0
    for _ in range(5):
        assert w.admit(t, 20) is None
    refused = w.admit(t + 1, 20)
    assert refused.status == 429
    assert dict(refused.headers)["Retry-After"] == "59"
    assert dict(refused.headers)["X-MBX-USED-WEIGHT-1M"] == "100"
    banned = w.admit(t + 2, 20)  # asked again during the Retry-After: banned
    assert banned.status == 418 and dict(banned.headers)["Retry-After"] == "120"
    assert b"banned until" in banned.body
    assert w.admit(t + 100, 20).status == 418  # a new minute, still banned
    assert w.admit(t + 123, 20) is None
    assert w.stats()["refused_418"] == 2


def test_sim_refuses_a_long_url_with_414_and_enforces_messages() -> None:
    with SimProcess(["--universe", "300", "--rate", "100"]) as sim:
        names = [s.lower() + "@aggTrade" for s in universe(300)]
        path = "/market/stream?streams=" + "/".join(names)
        assert len(path) > MAX_URL_LENGTH
        conn = http.client.HTTPConnection(sim.host, sim.port, timeout=10)
        conn.request("GET", path, headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        resp = conn.getresponse()
        assert resp.status == 414 and resp.reason == "Request-URI Too Long"
        conn.close()
        with pytest.raises(websocket.WebSocketBadStatusException, match="414"):
            websocket.create_connection(sim.ws_url + path, timeout=10)

        ws = websocket.create_connection(sim.ws_url + "/market/stream?streams=aaaausdt@aggTrade")
        too_many = {"method": "SUBSCRIBE", "params": names[:201], "id": 1}
        ws.send(orjson.dumps(too_many).decode())
        reply = orjson.loads(ws.recv())
        while "id" not in reply:
            reply = orjson.loads(ws.recv())
        assert reply == {
            "code": 2,
            "msg": "Invalid request: too many parameters (at most 200)",
            "id": 1,
        }
        ws.send("x" * 9000)
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            while True:
                ws.recv()
        stats = sim.stats()
        assert stats["connections"]["closed"].get("message_too_big") == 1

        status, headers, body = sim.get("/fapi/v1/exchangeInfo")
        assert status == 200 and "X-MBX-USED-WEIGHT-1M" in headers
        info = orjson.loads(body)
        assert len(info["symbols"]) == 302  # BTCUSDT, ETHUSDT and the universe
        assert {s["contractType"] for s in info["symbols"]} == {"PERPETUAL"}


def test_listed_symbols_from_exchange_info() -> None:
    v = _venue(1)
    info = {
        "symbols": [
            {"symbol": "BTCUSDT", "status": "TRADING", "contractType": "PERPETUAL"},
            {"symbol": "BTCUSDT_261225", "status": "TRADING", "contractType": "CURRENT_QUARTER"},
            {"symbol": "OLDUSDT", "status": "SETTLING", "contractType": "PERPETUAL"},
        ]
    }
    assert v.listed(orjson.dumps(info)) == {"BTCUSDT"}
    assert v.listing_url() == "https://fapi.example/fapi/v1/exchangeInfo"
    with pytest.raises(FeedError):
        v.listed(b"<html>")


def test_reconnect_resubscribes_runtime_changes() -> None:
    """After a reconnect the URL and planned messages bring back the config's streams: the
    streams added at runtime are subscribed again and the removed ones unsubscribed."""
    v = _venue(300)
    plan = next(r for r in v.plan() if r.name.startswith("market"))
    conn = Connection(plan.name, plan.url, dict(plan.streams), Backoff(0.1, 1.0))
    assert resubscribe_frames(v, plan, conn) == ()
    added = v.symbol_streams("NEWUSDT")["market"]
    conn.streams.update(added)
    gone = [k for k in conn.streams if k[0] == "AAAAUSDT"]
    for key in gone:
        del conn.streams[key]
    frames = [orjson.loads(f) for f in resubscribe_frames(v, plan, conn)]
    assert [(f["method"], sorted(f["params"])) for f in frames] == [
        ("SUBSCRIBE", sorted(added.values())),
        ("UNSUBSCRIBE", ["aaaausdt@aggTrade", "aaaausdt@markPrice@1s"]),
    ]


def _diff(first: int, last: int, prev: int) -> DepthDiff:
    return DepthDiff("BTCUSDT", 0, 0, first, last, prev, [], [], [], [])


def test_a_waiting_book_forgets_diffs_older_than_any_snapshot_to_come() -> None:
    sync = book_sync("futures")
    prev = 0
    for u in range(10, 1010, 10):
        assert sync.on_diff(_diff(u - 9, u, prev)) is Action.BUFFERED
        prev = u
    assert sync.forget_through(900) == 90 and sync.buffered == 10
    # The snapshot that comes later still syncs with the diffs kept.
    result = sync.on_snapshot(DepthSnapshot(955, [], [], [], []))
    assert result.status is SnapshotStatus.SYNCED
    assert [d.last_id for d in result.diffs] == [960, 970, 980, 990, 1000]
    assert sync.forget_through(10_000) == 0  # synced: nothing buffered to forget
