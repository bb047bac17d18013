"""Bybit's parser, book rules and venue fed messages directly, without sockets."""

from __future__ import annotations

import orjson
import pytest

from mdpipe.instrument import Instrument
from mdpipe.venues.base import (
    Ack,
    Action,
    Alive,
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    SendFrames,
    SnapshotStatus,
    Trades,
)
from mdpipe.venues.bybit import BybitVenue
from mdpipe.venues.bybit.sync import BybitBookSync
from mdpipe.venues.bybit.wire import TRADE_ID_SPAN, BybitParser
from mdpipe.venues.errors import FeedError
from mdpipe.venues.local_book import LocalBook

# Every test here runs on both hot paths: the C book and level readers, and pure Python.
pytestmark = pytest.mark.usefixtures("hot_path")

# The documented examples (bybit v5 orderbook page), byte for byte.
SNAPSHOT = (
    b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1750000000120,"data":{"s":"BTCUSDT",'
    b'"b":[["64000.1","1.25"]],"a":[["64000.2","0.8"]],"u":4100,"seq":9100200},"cts":1750000000118}'
)
DELTA = (
    b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1750000000140,"data":{"s":"BTCUSDT",'
    b'"b":[],"a":[["64000.2","0"],["64000.5","2.1"]],"u":4101,"seq":9100231},"cts":1750000000137}'
)


def _book(kind: str, u: int, seq: int, bids=(), asks=(), depth: int = 50) -> bytes:
    return orjson.dumps(
        {
            "topic": f"orderbook.{depth}.BTCUSDT",
            "type": kind,
            "ts": 1_750_000_000_000 + u,
            "data": {
                "s": "BTCUSDT",
                "b": [[str(p), str(q)] for p, q in bids],
                "a": [[str(p), str(q)] for p, q in asks],
                "u": u,
                "seq": seq,
            },
            "cts": 1_750_000_000_000 + u - 2,
        }
    )


def test_parser_reads_the_documented_snapshot_and_delta() -> None:
    p = BybitParser("linear")
    snap = p.parse(SNAPSHOT)
    assert isinstance(snap, DepthSnapshot)
    assert (snap.symbol, snap.first_id, snap.last_update_id) == ("BTCUSDT", 4100, 9100200)
    assert (snap.event_time, snap.transaction_time) == (1750000000120, 1750000000118)
    assert (snap.bid_prices, snap.bid_qtys, snap.ask_prices) == ([64000.1], [1.25], [64000.2])
    d = p.parse(DELTA)
    assert isinstance(d, DepthDiff)
    assert (d.first_id, d.last_id, d.prev_id) == (4101, 9100231, -1)
    assert (d.ask_prices, d.ask_qtys, d.bid_prices) == ([64000.2, 64000.5], [0.0, 2.1], [])


def test_parser_reads_top_of_book_trades_acks_and_pongs() -> None:
    p = BybitParser("linear")
    top = p.parse(_book("snapshot", 7, 500, [(10.5, 1)], [], depth=1))
    assert top == BookTicker("BTCUSDT", 500, 10.5, 1.0, 0.0, 0.0, 1750000000007, 1750000000005)
    pong = b'{"success":true,"ret_msg":"pong","conn_id":"c1","req_id":"hb","op":"ping"}'
    assert p.parse(pong) == Alive("pong")
    assert p.parse(b'{"req_id":"hb","op":"pong","args":["1"],"conn_id":"c"}') == Alive("pong")
    ok = b'{"success":true,"ret_msg":"","conn_id":"c","req_id":"s1","op":"subscribe"}'
    assert p.parse(ok) == Ack("s1", True, "", "subscribe")
    bad = (
        b'{"success":false,"ret_msg":"args size >10","conn_id":"c","req_id":"s2","op":"subscribe"}'
    )
    assert p.parse(bad) == Ack("s2", False, "args size >10", "subscribe")


def _trade_msg(rows: list[tuple[int, str, str]]) -> bytes:
    return orjson.dumps(
        {
            "topic": "publicTrade.BTCUSDT",
            "type": "snapshot",
            "ts": 1750000000300,
            "data": [
                {"T": 1750000000297, "s": "BTCUSDT", "S": side, "v": "0.004", "p": "64000.1",
                 "L": "MinusTick", "i": uid, "BT": False, "RPI": False, "seq": seq}
                for seq, side, uid in rows
            ],
        }
    )  # fmt: skip


def test_trade_ids_are_seq_and_position_unique_and_growing_across_messages() -> None:
    p = BybitParser("linear")
    first = p.parse(_trade_msg([(900, "Sell", "6a1c-a"), (900, "Buy", "6a1c-b")]))
    # The same seq continues in the next message (one taker order, many makers).
    second = p.parse(_trade_msg([(900, "Buy", "6a1c-c"), (901, "Buy", "6a1c-d")]))
    assert isinstance(first, Trades) and isinstance(second, Trades)
    ids = [t.trade_id for t in first.trades + second.trades]
    base = 900 * TRADE_ID_SPAN
    assert ids == [base, base + 1, base + 2, 901 * TRADE_ID_SPAN]
    t = first.trades[0]
    assert (t.price, t.qty, t.buyer_is_maker, t.trade_time) == (64000.1, 0.004, True, 1750000000297)
    assert first.trades[1].buyer_is_maker is False  # a taker buy


@pytest.mark.parametrize(
    "raw, kind",
    [
        (b'{"topic":"orderbook.50.BTCUSDT","type":"delta"', "malformed_json"),
        (DELTA.replace(b'"u":4101', b'"u":"4101"'), "bad_type"),
        (DELTA.replace(b'"64000.5"', b'"NaN"'), "bad_number"),
        (DELTA.replace(b'"64000.5"', b'"-1"'), "bad_number"),
        (DELTA.replace(b',"seq":9100231', b""), "missing_field"),
        (DELTA.replace(b'"delta"', b'"patch"'), "unknown_event"),
        (b'{"topic":"kline.1.BTCUSDT","data":{}}', "unknown_stream"),
        (b'{"topic":"tickers.BTCUSDT","type":"delta","ts":1,"data":{}}', "missing_field"),
        (
            b'{"topic":"tickers.BTCUSDT","type":"delta","ts":1,"data":{"symbol":"BTCUSDT",'
            b'"fundingRate":"x"}}',
            "bad_number",
        ),  # fmt: skip
        (_trade_msg([(1, "Hold", "x")]), "bad_type"),
        (b"[1,2]", "bad_type"),
    ],
)
def test_bad_messages_raise_one_feed_error_kind(raw: bytes, kind: str) -> None:
    with pytest.raises(FeedError) as err:
        BybitParser("spot").parse(raw)
    assert err.value.kind == kind


def _delta(u: int, seq: int, bids=(), asks=()) -> DepthDiff:
    return DepthDiff("BTCUSDT", 0, 0, u, seq, -1, [p for p, _ in bids], [q for _, q in bids],
                     [p for p, _ in asks], [q for _, q in asks])  # fmt: skip


def _snap(u: int, seq: int, bids=((10.0, 1.0),), asks=((11.0, 1.0),)) -> DepthSnapshot:
    return DepthSnapshot(seq, [p for p, _ in bids], [q for _, q in bids], [p for p, _ in asks],
                         [q for _, q in asks], 0, 0, "BTCUSDT", u)  # fmt: skip


def test_sync_needs_a_snapshot_then_applies_u_plus_one() -> None:
    s = BybitBookSync()
    assert s.needs_snapshot and not s.needs_recovery and not s.synced
    assert s.on_diff(_delta(5, 50)) is Action.IGNORED  # no book yet
    assert s.on_snapshot(_snap(5, 50)).status is SnapshotStatus.EXACT
    assert s.synced and s.last_update_id == 50
    d = _delta(6, 58)
    assert s.on_diff(d) is Action.APPLY and d.prev_id == 50 and s.last_update_id == 58
    assert s.on_diff(_delta(6, 58)) is Action.IGNORED  # already applied
    assert s.on_diff(_delta(4, 40)) is Action.IGNORED
    assert s.ignored == 3


def test_a_gap_breaks_the_book_until_a_resubscription_brings_a_snapshot() -> None:
    s = BybitBookSync()
    s.on_snapshot(_snap(5, 50))
    assert s.on_diff(_delta(7, 70)) is Action.RESYNC
    assert not s.synced and s.needs_recovery and s.resyncs == 1 and "gap" in s.reason
    assert s.on_diff(_delta(8, 80)) is Action.IGNORED  # deltas in flight are useless
    s.on_snapshot(_snap(9, 90))
    assert s.synced and not s.needs_recovery


def test_u_1_restart_rules() -> None:
    s = BybitBookSync()
    s.on_snapshot(_snap(500, 5000))
    # A snapshot with u=1: the service restarted; it replaces the book.
    assert s.on_snapshot(_snap(1, 7000)).status is SnapshotStatus.EXACT
    assert s.synced and s.restarts == 1
    assert s.on_diff(_delta(2, 7001)) is Action.APPLY
    # A delta with u=1 without its snapshot: the book cannot be trusted.
    assert s.on_diff(_delta(1, 7100)) is Action.RESYNC and "restart" in s.reason


def test_a_snapshot_mid_stream_replaces_the_book() -> None:
    local = LocalBook(BybitBookSync(), "BTCUSDT")
    local.on_snapshot(_snap(5, 50, bids=((10.0, 1.0), (9.0, 2.0))))
    local.on_diff(_delta(6, 60, asks=((10.5, 3.0),)))
    assert local.book.best_bid() == (10.0, 1.0) and local.book.best_ask() == (10.5, 3.0)
    local.on_snapshot(_snap(40, 400, bids=((8.0, 1.0),), asks=((12.0, 1.0),)))
    assert local.synced and local.sync.last_update_id == 400
    assert local.book.bids() == [(8.0, 1.0)] and local.book.asks() == [(12.0, 1.0)]


def test_reset_waits_for_the_reconnects_snapshot_without_asking() -> None:
    s = BybitBookSync()
    s.on_snapshot(_snap(5, 50))
    s.reset()
    assert s.needs_snapshot and not s.needs_recovery


def _venue(market: str = "spot", symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")) -> BybitVenue:
    return BybitVenue(market, list(symbols), ws_url="ws://h:1")


def test_plan_subscribes_each_topic_by_its_own_request_and_pings() -> None:
    symbols = tuple(f"C{i}USDT" for i in range(12))
    (route,) = _venue(symbols=symbols).plan()
    assert route.url == "ws://h:1/v5/public/spot"
    assert route.streams[("C0USDT", "depth")] == "orderbook.50.C0USDT"
    assert route.streams[("C0USDT", "trade")] == "publicTrade.C0USDT"
    requests = [orjson.loads(f) for f in route.subscribe]
    # One topic per request: a refusal costs that topic alone and its req_id names it.
    assert [(r["op"], r["req_id"], r["args"]) for r in requests] == [
        ("subscribe", topic, [topic]) for topic in route.streams.values()
    ]
    assert orjson.loads(route.ping) == {"op": "ping", "req_id": "hb"} and route.ping_interval == 20


def test_plan_splits_connections_at_the_args_length_limit() -> None:
    symbols = tuple(f"S{i:05d}USDT" for i in range(700))
    routes = _venue("linear", symbols).plan()
    assert len(routes) > 1
    for r in routes:
        assert sum(len(t) for t in r.streams.values()) <= 21_000
    assert sum(len(r.streams) for r in routes) == 1400


def test_recovery_resubscribes_the_book_topic() -> None:
    how = _venue().recovery("ETHUSDT")
    assert isinstance(how, SendFrames)
    ops = [orjson.loads(f) for f in how.frames]
    assert [(o["op"], o["args"]) for o in ops] == [
        ("unsubscribe", ["orderbook.50.ETHUSDT"]),
        ("subscribe", ["orderbook.50.ETHUSDT"]),
    ]


def test_instruments_quiet_trades_and_rest_policy() -> None:
    assert _venue("linear").instrument("BTCUSDT") == Instrument("BTC", "USDT", "perp")
    assert _venue("spot").instrument("SOLUSDC") == Instrument("SOL", "USDC", "spot")
    v = _venue()
    streams = [
        ("BTCUSDT", "depth"),
        ("BTCUSDT", "trade"),
        ("ETHUSDT", "depth"),
        ("ETHUSDT", "trade"),
    ]
    unseen = {("BTCUSDT", "trade"), ("ETHUSDT", "depth"), ("ETHUSDT", "trade")}
    assert v.quiet_streams(streams, unseen) == {("BTCUSDT", "trade")}
    banned = v.rest_verdict(403, None, 1.0, 0, "")
    assert (banned.counter, banned.wait, banned.blocked) == ("rest_403", 600.0, True)
    assert v.exchange == "bybit-spot"
