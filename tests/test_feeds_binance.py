"""Binance endpoints and parser: every event kind of both markets, every kind of bad input."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from mdpipe.venues import levels
from mdpipe.venues.base import Ticker
from mdpipe.venues.binance.wire import (
    BAD_NUMBER,
    BAD_TYPE,
    ERROR_KINDS,
    MALFORMED_JSON,
    MAX_STREAMS_PER_CONNECTION,
    MISSING_FIELD,
    UNKNOWN_EVENT,
    UNKNOWN_STREAM,
    BinanceParser,
    BookTicker,
    Connection,
    DepthDiff,
    DepthSnapshot,
    FeedError,
    MarkPrice,
    ServerShutdown,
    Trade,
    parse_levels,
    parse_snapshot,
    plan_connections,
    snapshot_url,
)
from mdpipe.venues.levels import DIFF_IN_ENVELOPE, SNAPSHOT
from mdpipe.venues.tapes import FUTURES_TAPE, SPOT_TAPE, is_snapshot, load_tape, tape_path

# Every test here runs on both hot paths: the C book and level readers, and pure Python.
pytestmark = pytest.mark.usefixtures("hot_path")

# Real messages from the recorded tapes (2024-08-08), one per kind.
FUTURES_DEPTH = (
    b'{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161256299,'
    b'"T":1723161256298,"s":"BTCUSDT","U":5123107832006,"u":5123107837557,"pu":5123107831937,'
    b'"b":[["58710.20","0.014"],["61510.90","0.000"],["61800.20","2.507"]],'
    b'"a":[["61800.30","3.330"],["61814.90","0.000"]]}}'
)
FUTURES_BOOK_TICKER = (
    b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107839020,"s":"BTCUSDT",'
    b'"b":"61800.20","B":"2.507","a":"61800.30","A":"2.510","T":1723161256313,'
    b'"E":1723161256313}}'
)
FUTURES_TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"T":1723161256322,'
    b'"s":"BTCUSDT","t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET","m":false}}'
)
FUTURES_AGG_TRADE = (
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1723161256322,"s":"BTCUSDT",'
    b'"a":2287436012,"p":"61800.30","q":"0.006","f":5266583935,"l":5266583936,'
    b'"T":1723161256322,"m":true}}'
)
SPOT_DEPTH = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,'
    b'"s":"BTCUSDT","U":50093239189,"u":50093239202,'
    b'"b":[["61737.63000000","0.00000000"],["56854.58000000","0.00000000"]],'
    b'"a":[["61837.64000000","1.54698000"]]}}'
)
SPOT_BOOK_TICKER = (
    b'{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT",'
    b'"b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}'
)
SPOT_TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
    b'"t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,'
    b'"M":true}}'
)
SPOT_AGG_TRADE = (
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1723161255343,"s":"BTCUSDT",'
    b'"a":3102930811,"p":"61837.63000000","q":"0.02000000","f":3735683259,"l":3735683259,'
    b'"T":1723161255342,"m":true,"M":true}}'
)
FUTURES_SNAPSHOT = (
    b'{"lastUpdateId":5123107852948,"E":1723161256501,"T":1723161256493,'
    b'"bids":[["61800.20","2.909"],["61800.10","0.002"]],"asks":[["61800.30","2.120"]]}'
)
SPOT_SNAPSHOT = (
    b'{"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"]],'
    b'"asks":[["61837.64000000","1.60520000"],["61837.65000000","0.00000000"]]}'
)


@pytest.fixture(scope="module")
def tapes_lines() -> dict[str, list[bytes]]:
    return {
        market: [raw for _, raw in load_tape(tape_path(name))]
        for market, name in (("futures", FUTURES_TAPE), ("spot", SPOT_TAPE))
    }


@pytest.fixture(params=["futures", "spot"])
def market(request: pytest.FixtureRequest) -> str:
    return request.param


def envelope(stream: str, data: object) -> bytes:
    return orjson.dumps({"stream": stream, "data": data})


def depth_data(market: str) -> dict:
    return orjson.loads(FUTURES_DEPTH if market == "futures" else SPOT_DEPTH)["data"]


def refused(market: str, raw: bytes | str) -> str:
    with pytest.raises(FeedError) as info:
        BinanceParser(market).parse(raw)
    assert info.value.kind in ERROR_KINDS
    assert isinstance(info.value, ValueError)
    assert info.value.detail and info.value.kind in str(info.value)
    return info.value.kind


# --- endpoints ---------------------------------------------------------------------------------


def test_futures_connections_use_both_routes() -> None:
    plan = plan_connections("futures", ["BTCUSDT", "ethusdt"], "depth@0ms", "trade")
    assert plan == [
        Connection(
            "wss://fstream.binance.com/public/stream?streams="
            "btcusdt@depth@0ms/btcusdt@bookTicker/ethusdt@depth@0ms/ethusdt@bookTicker",
            ("btcusdt@depth@0ms", "btcusdt@bookTicker", "ethusdt@depth@0ms", "ethusdt@bookTicker"),
        ),
        Connection(
            "wss://fstream.binance.com/market/stream?streams=btcusdt@trade/ethusdt@trade",
            ("btcusdt@trade", "ethusdt@trade"),
        ),
    ]
    url, streams = plan[1]
    assert streams == ("btcusdt@trade", "ethusdt@trade") and "/market/" in url


def test_spot_connection_carries_everything() -> None:
    plan = plan_connections("spot", ["BTCUSDT"], "depth@100ms", "aggTrade")
    assert plan == [
        Connection(
            "wss://stream.binance.com:9443/stream?streams="
            "btcusdt@depth@100ms/btcusdt@bookTicker/btcusdt@aggTrade",
            ("btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@aggTrade"),
        )
    ]


def test_connections_without_book_ticker_or_trades_and_with_a_local_base() -> None:
    plan = plan_connections(
        "futures", ["btcusdt"], "depth", None, book_ticker=False, ws_base="ws://127.0.0.1:9000/"
    )
    assert plan == [
        Connection("ws://127.0.0.1:9000/public/stream?streams=btcusdt@depth", ("btcusdt@depth",))
    ]
    spot = plan_connections("spot", ["btcusdt"], "depth", None, ws_base="ws://h:1")
    assert spot[0].url == "ws://h:1/stream?streams=btcusdt@depth/btcusdt@bookTicker"


def test_connections_split_at_the_stream_limit() -> None:
    symbols = [f"sym{i}usdt" for i in range(600)]
    plan = plan_connections("futures", symbols, "depth@100ms", "aggTrade")
    public = [c for c in plan if "/public/" in c.url]
    market = [c for c in plan if "/market/" in c.url]
    assert [len(c.streams) for c in public] == [MAX_STREAMS_PER_CONNECTION, 1200 - 1024]
    assert [len(c.streams) for c in market] == [600]
    # A symbol's depth and bookTicker streams stay on one connection.
    assert public[0].streams[-2:] == ("sym511usdt@depth@100ms", "sym511usdt@bookTicker")
    every = [s for c in plan for s in c.streams]
    assert len(every) == len(set(every)) == 1800
    for c in plan:
        assert c.url.endswith("?streams=" + "/".join(c.streams))
    spot = plan_connections("spot", symbols, "depth", "trade", max_streams=500)
    assert [len(c.streams) for c in spot] == [500, 500, 500, 300]
    assert spot[0].streams[:3] == ("sym0usdt@depth", "sym0usdt@bookTicker", "sym0usdt@trade")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"market": "options"},
        {"symbols": []},
        {"symbols": ["btc-usdt"]},
        {"symbols": ["BTCUSDT", "btcusdt"]},
        {"depth": "depth5"},
        {"depth": "bookTicker"},
        {"trade": "trades"},
        {"max_streams": 0},
        {"max_streams": 1025},
    ],
)
def test_bad_connection_requests_are_refused(kwargs: dict) -> None:
    args = {"market": "futures", "symbols": ["BTCUSDT"], "depth": "depth@100ms"} | kwargs
    with pytest.raises(ValueError):
        plan_connections(**args)


def test_snapshot_urls() -> None:
    assert (
        snapshot_url("futures", "btcusdt", 1000)
        == "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
    )
    assert (
        snapshot_url("spot", "BTCUSDT", 5000)
        == "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=5000"
    )
    assert (
        snapshot_url("spot", "ethusdt", 100, rest_base="http://127.0.0.1:8080/")
        == "http://127.0.0.1:8080/api/v3/depth?symbol=ETHUSDT&limit=100"
    )
    for limit in (5, 10, 20, 50, 100, 500, 1000):
        assert snapshot_url("futures", "BTCUSDT", limit).endswith(f"&limit={limit}")
    for market, limit in (("futures", 200), ("futures", 5000), ("spot", 0), ("spot", 5001)):
        with pytest.raises(ValueError):
            snapshot_url(market, "BTCUSDT", limit)
    with pytest.raises(ValueError):
        snapshot_url("futures", "BTC/USDT")


# --- events of both markets --------------------------------------------------------------------


def test_futures_depth_update() -> None:
    diff = BinanceParser("futures").parse(FUTURES_DEPTH)
    assert diff == DepthDiff(
        "BTCUSDT",
        1723161256299,
        1723161256298,
        5123107832006,
        5123107837557,
        5123107831937,
        [58710.2, 61510.9, 61800.2],
        [0.014, 0.0, 2.507],
        [61800.3, 61814.9],
        [3.33, 0.0],
    )


def test_spot_depth_update() -> None:
    diff = BinanceParser("spot").parse(SPOT_DEPTH)
    assert diff == DepthDiff(
        "BTCUSDT",
        1723161255208,
        0,
        50093239189,
        50093239202,
        -1,
        [61737.63, 56854.58],
        [0.0, 0.0],
        [61837.64],
        [1.54698],
    )


def test_depth_update_with_empty_sides() -> None:
    data = depth_data("futures") | {"b": [], "a": []}
    diff = BinanceParser("futures").parse(envelope("btcusdt@depth", data))
    assert isinstance(diff, DepthDiff)
    assert diff.bid_prices == diff.bid_qtys == diff.ask_prices == diff.ask_qtys == []


def test_depth_update_from_str_and_bare_event(market: str) -> None:
    raw = FUTURES_DEPTH if market == "futures" else SPOT_DEPTH
    parser = BinanceParser(market)
    from_bytes = parser.parse(raw)
    assert parser.parse(raw.decode()) == from_bytes
    assert parser.parse(bytearray(raw)) == from_bytes
    assert parser.parse(orjson.dumps(orjson.loads(raw)["data"])) == from_bytes


def test_book_tickers() -> None:
    assert BinanceParser("futures").parse(FUTURES_BOOK_TICKER) == BookTicker(
        "BTCUSDT", 5123107839020, 61800.2, 2.507, 61800.3, 2.51, 1723161256313, 1723161256313
    )
    assert BinanceParser("spot").parse(SPOT_BOOK_TICKER) == BookTicker(
        "BTCUSDT", 50093239212, 61837.63, 3.78826, 61837.64, 1.54698, 0, 0
    )


def test_trades() -> None:
    assert BinanceParser("futures").parse(FUTURES_TRADE) == Trade(
        "BTCUSDT",
        1723161256322,
        1723161256322,
        5266583935,
        61800.3,
        0.006,
        False,
        5266583935,
        5266583935,
        False,
        "MARKET",
    )
    assert BinanceParser("spot").parse(SPOT_TRADE) == Trade(
        "BTCUSDT",
        1723161255343,
        1723161255342,
        3735683259,
        61837.63,
        0.02,
        True,
        3735683259,
        3735683259,
        False,
        "",
    )


def test_agg_trades() -> None:
    assert BinanceParser("futures").parse(FUTURES_AGG_TRADE) == Trade(
        "BTCUSDT",
        1723161256322,
        1723161256322,
        2287436012,
        61800.3,
        0.006,
        True,
        5266583935,
        5266583936,
        True,
        "",
    )
    trade = BinanceParser("spot").parse(SPOT_AGG_TRADE)
    assert isinstance(trade, Trade) and trade.aggregated and trade.trade_id == 3102930811


def test_server_shutdown(market: str) -> None:
    parser = BinanceParser(market)
    enveloped = envelope("!serverShutdown", {"e": "serverShutdown", "E": 1770123456789})
    assert parser.parse(enveloped) == ServerShutdown(1770123456789)
    assert parser.parse(b'{"e":"serverShutdown","E":5}') == ServerShutdown(5)
    assert parser.parse(b'{"e":"serverShutdown"}') == ServerShutdown(0)


def test_snapshots() -> None:
    assert parse_snapshot(FUTURES_SNAPSHOT) == DepthSnapshot(
        5123107852948,
        [61800.2, 61800.1],
        [2.909, 0.002],
        [61800.3],
        [2.12],
        1723161256501,
        1723161256493,
    )
    assert parse_snapshot(SPOT_SNAPSHOT.decode()) == DepthSnapshot(
        50093239218, [61837.63], [3.78826], [61837.64, 61837.65], [1.6052, 0.0]
    )


def test_parse_levels() -> None:
    assert parse_levels([["1.50", "2"], ["3", "0.000"]]) == ([1.5, 3.0], [2.0, 0.0])
    assert parse_levels([]) == ([], [])
    with pytest.raises(FeedError) as info:
        parse_levels([["-1", "2"]], "bids")
    assert info.value.kind == BAD_NUMBER and "bids" in info.value.detail


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"", b"{", b'{"stream":"x@depth","data":{', b"nope", b"\xff\xfe", "{]"]
)
def test_malformed_json(market: str, raw: bytes | str) -> None:
    assert refused(market, raw) == MALFORMED_JSON


@pytest.mark.parametrize(
    "raw",
    [
        b"[1,2]",
        b"42",
        b'"text"',
        b"null",
        b'{"stream":"btcusdt@depth","data":[1]}',
        b'{"stream":"btcusdt@depth","data":"x"}',
        b'{"stream":"btcusdt@depth","data":{"e":["depthUpdate"]}}',
        b'{"e":{"x":1}}',
    ],
)
def test_wrong_shapes_are_bad_types(market: str, raw: bytes) -> None:
    assert refused(market, raw) == BAD_TYPE


@pytest.mark.parametrize(
    "change",
    [
        {"U": "5123107832006"},
        {"u": 1.5},
        {"E": None},
        {"s": 7},
        {"u": True},
        {"b": "61800.20"},
        {"b": {"61800.20": "1"}},
        {"a": [["61800.30"]]},
        {"a": [["61800.30", "1", "2"]]},
        {"a": [[["61800.30"], "1"]]},
        {"a": [["61800.30", None]]},
        {"b": ["12"]},
        {"b": [["61800.20", "1"], "12"]},
        {"b": [{"1": "2", "3": "4"}]},
        {"b": [61800.2]},
        {"b": [[61800.2, "1"]]},
        {"a": [["61800.30", 1]]},
        {"a": [[True, "1"]]},
        {"a": [["61800.30", False]]},
    ],
)
def test_wrong_field_types_in_depth_updates(market: str, change: dict) -> None:
    assert refused(market, envelope("btcusdt@depth", depth_data(market) | change)) == BAD_TYPE


@pytest.mark.parametrize(
    "change",
    [
        {"b": [["NaN", "1"]]},
        {"b": [["nan", "1"]]},
        {"a": [["inf", "1"]]},
        {"a": [["61800.30", "Infinity"]]},
        {"a": [["61800.30", "1e999"]]},
        {"a": [["1" + "0" * 400, "1"]]},
        {"b": [["-61800.20", "1"]]},
        {"b": [["61800.20", "-0.5"]]},
        {"b": [["61800.20", "1"], ["61800.10", "-0.5"]]},
        {"b": [["\u002d1", "1"]]},
        {"b": [["0.00", "1"]]},
        {"b": [["0", "0"]]},
        {"a": [["abc", "1"]]},
        {"a": [["", "1"]]},
        {"a": [["1.2.3", "1"]]},
        {"U": 10, "u": 9},
    ],
)
def test_bad_numbers_in_depth_updates(market: str, change: dict) -> None:
    assert refused(market, envelope("btcusdt@depth", depth_data(market) | change)) == BAD_NUMBER


def test_negative_hidden_behind_a_json_escape_is_caught(market: str) -> None:
    raw = envelope("btcusdt@depth", depth_data(market)).replace(b'"61', b'"\\u002d61', 1)
    assert b"-" not in raw
    assert refused(market, raw) == BAD_NUMBER
    assert refused(market, raw.decode()) == BAD_NUMBER


def test_a_dash_elsewhere_does_not_reject_a_good_update(market: str) -> None:
    raw = envelope("btc-usdt@depth", depth_data(market))
    assert isinstance(BinanceParser(market).parse(raw), DepthDiff)


@pytest.mark.parametrize("field", ["s", "E", "U", "u", "b", "a"])
def test_missing_depth_fields(market: str, field: str) -> None:
    data = depth_data(market)
    del data[field]
    assert refused(market, envelope("btcusdt@depth", data)) == MISSING_FIELD


@pytest.mark.parametrize("field", ["T", "pu"])
def test_futures_depth_needs_its_extra_fields(field: str) -> None:
    data = depth_data("futures")
    del data[field]
    assert refused("futures", envelope("btcusdt@depth", data)) == MISSING_FIELD
    # Spot never sends them: the same data is a valid spot diff.
    assert isinstance(BinanceParser("spot").parse(envelope("btcusdt@depth", data)), DepthDiff)


@pytest.mark.parametrize(
    ("market_", "raw", "field"),
    [
        ("futures", FUTURES_BOOK_TICKER, "A"),
        ("futures", FUTURES_BOOK_TICKER, "E"),
        ("futures", FUTURES_TRADE, "X"),
        ("futures", FUTURES_TRADE, "t"),
        ("futures", FUTURES_AGG_TRADE, "l"),
        ("spot", SPOT_TRADE, "m"),
        ("spot", SPOT_AGG_TRADE, "f"),
        ("spot", SPOT_BOOK_TICKER, "B"),
    ],
)
def test_missing_fields_in_other_events(market_: str, raw: bytes, field: str) -> None:
    msg = orjson.loads(raw)
    del msg["data"][field]
    assert refused(market_, orjson.dumps(msg)) == MISSING_FIELD


@pytest.mark.parametrize(
    ("raw", "field", "value", "kind"),
    [
        (FUTURES_TRADE, "p", "NaN", BAD_NUMBER),
        (FUTURES_TRADE, "p", "-61800.30", BAD_NUMBER),
        (FUTURES_TRADE, "q", "0", BAD_NUMBER),
        (FUTURES_TRADE, "q", "inf", BAD_NUMBER),
        (FUTURES_TRADE, "p", "x", BAD_NUMBER),
        (FUTURES_TRADE, "m", "false", BAD_TYPE),
        (FUTURES_TRADE, "t", "5266583935", BAD_TYPE),
        (FUTURES_TRADE, "p", None, BAD_TYPE),
        (FUTURES_TRADE, "p", True, BAD_TYPE),
        (FUTURES_AGG_TRADE, "q", "-1", BAD_NUMBER),
        (FUTURES_AGG_TRADE, "f", 1.0, BAD_TYPE),
        (FUTURES_BOOK_TICKER, "b", "nan", BAD_NUMBER),
        (FUTURES_BOOK_TICKER, "A", "-2", BAD_NUMBER),
        (FUTURES_BOOK_TICKER, "u", "1", BAD_TYPE),
        (FUTURES_BOOK_TICKER, "B", [1], BAD_TYPE),
    ],
)
def test_bad_values_in_futures_trades_and_tickers(
    raw: bytes, field: str, value: object, kind: str
) -> None:
    msg = orjson.loads(raw)
    msg["data"][field] = value
    assert refused("futures", orjson.dumps(msg)) == kind


def test_empty_book_side_in_a_ticker_is_zero_not_an_error() -> None:
    msg = orjson.loads(FUTURES_BOOK_TICKER)
    msg["data"] |= {"b": "0.00", "B": "0.000"}
    ticker = BinanceParser("futures").parse(orjson.dumps(msg))
    assert isinstance(ticker, BookTicker) and (ticker.bid_price, ticker.bid_qty) == (0.0, 0.0)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"stream":"btcusdt@kline_1m","data":{"e":"kline"}}',
        b'{"e":"listenKeyExpired"}',
        b'{"stream":"x","data":{"e":""}}',
    ],
)
def test_unknown_events(market: str, raw: bytes) -> None:
    assert refused(market, raw) == UNKNOWN_EVENT


def test_mark_price_and_its_stream_on_the_market_route() -> None:
    raw = (
        b'{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,'
        b'"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265",'
        b'"r":"0.00038167","T":1562306400000}}'
    )
    values = {
        "mark_price": 11794.15,
        "index_price": 11784.62659091,
        "funding_rate": 0.00038167,
        "next_funding_ts_ns": 1562306400000 * 1_000_000,
    }
    assert BinanceParser("futures").parse(raw) == MarkPrice(
        "BTCUSDT", 1562305380000, 11794.15, values
    )
    missing = b'{"stream":"btcusdt@markPrice","data":{"e":"markPriceUpdate","E":1,"s":"BTCUSDT"}}'
    assert refused("futures", missing) == "missing_field"
    (public, market) = plan_connections("futures", ["BTCUSDT"], trade="aggTrade", mark_price=True)
    assert market.url.endswith("/market/stream?streams=btcusdt@aggTrade/btcusdt@markPrice@1s")
    assert "markPrice" not in public.url


def test_24hr_tickers_of_both_markets() -> None:
    futures = (
        b'{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":123456789,"s":"BTCUSDT",'
        b'"p":"0.0015","P":"250.00","w":"0.0018","c":"0.0025","Q":"10","o":"0.0010",'
        b'"h":"0.0025","l":"0.0010","v":"10000","q":"18","O":0,"C":86400000,"F":0,"L":18150,'
        b'"n":18151}}'
    )
    t = BinanceParser("futures").parse(futures)
    assert t == Ticker(
        "BTCUSDT",
        123456789,
        {
            "last_price": 0.0025,
            "open_24h": 0.0010,
            "high_24h": 0.0025,
            "low_24h": 0.0010,
            "volume_24h": 10000.0,
            "quote_volume_24h": 18.0,
        },
    )
    spot = futures.replace(b'"Q":"10",', b'"Q":"10","b":"0.0024","B":"10","a":"0.0026","A":"100",')
    values = BinanceParser("spot").parse(spot).values
    assert (values["bid_price"], values["bid_qty"], values["ask_price"], values["ask_qty"]) == (
        0.0024,
        10.0,
        0.0026,
        100.0,
    )
    assert refused("futures", futures.replace(b'"h":"0.0025",', b"")) == "missing_field"
    assert refused("futures", futures.replace(b'"v":"10000"', b'"v":"-1"')) == "bad_number"
    (_, market, day) = plan_connections("futures", ["BTCUSDT"], trade="aggTrade", ticker=True)
    assert market.url.endswith("/market/stream?streams=btcusdt@aggTrade")
    assert day.url.endswith("/market/stream?streams=btcusdt@ticker")
    (_, day) = plan_connections("spot", ["BTCUSDT"], ticker=True)
    assert day.url.endswith("/stream?streams=btcusdt@ticker")


def test_unknown_streams() -> None:
    no_event = b'{"stream":"btcusdt@ticker","data":{"s":"BTCUSDT"}}'
    assert refused("spot", no_event) == UNKNOWN_STREAM
    assert refused("futures", no_event) == UNKNOWN_STREAM
    # Futures bookTickers always carry `e`; one without it is not trusted as a ticker.
    msg = orjson.loads(FUTURES_BOOK_TICKER)
    del msg["data"]["e"]
    assert refused("futures", orjson.dumps(msg)) == UNKNOWN_STREAM


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":1}',  # neither a result nor an error: not an answer to a request
        b'{"data":{"s":"BTCUSDT"}}',
        b"{}",
    ],
)
def test_non_envelopes_lack_fields(market: str, raw: bytes) -> None:
    assert refused(market, raw) == MISSING_FIELD


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"<html>451</html>", MALFORMED_JSON),
        (b"[]", BAD_TYPE),
        (b'{"bids":[],"asks":[]}', MISSING_FIELD),
        (b'{"lastUpdateId":"1","bids":[],"asks":[]}', BAD_TYPE),
        (b'{"lastUpdateId":1,"bids":[["1","x"]],"asks":[]}', BAD_NUMBER),
        (b'{"lastUpdateId":1,"bids":[],"asks":[["-1","1"]]}', BAD_NUMBER),
        (b'{"lastUpdateId":1,"bids":{},"asks":[]}', BAD_TYPE),
    ],
)
def test_bad_snapshots(body: bytes, kind: str) -> None:
    with pytest.raises(FeedError) as info:
        parse_snapshot(body)
    assert info.value.kind == kind


def test_parser_refuses_an_unknown_market() -> None:
    with pytest.raises(ValueError):
        BinanceParser("margin")


def test_accepted_depth_values_are_always_usable(market: str) -> None:
    """Whatever passes is finite, prices positive, quantities non-negative."""
    diff = BinanceParser(market).parse(FUTURES_DEPTH if market == "futures" else SPOT_DEPTH)
    assert isinstance(diff, DepthDiff)
    assert all(math.isfinite(p) and p > 0 for p in diff.bid_prices + diff.ask_prices)
    assert all(math.isfinite(q) and q >= 0 for q in diff.bid_qtys + diff.ask_qtys)


# --- the plain-text fast path ------------------------------------------------------------------


def test_plain_levels_reads_compact_messages() -> None:
    plain = levels.plain_levels(FUTURES_DEPTH, DIFF_IN_ENVELOPE)
    assert plain is not None
    assert plain.rest.endswith(b'"pu":5123107831937,"b":0,"a":0}}')
    assert plain[1:] == (
        [58710.2, 61510.9, 61800.2],
        [0.014, 0.0, 2.507],
        [61800.3, 61814.9],
        [3.33, 0.0],
    )
    assert levels.plain_levels(bytearray(SPOT_DEPTH), DIFF_IN_ENVELOPE) is not None
    assert levels.plain_levels(SPOT_SNAPSHOT, SNAPSHOT) is not None
    empty = envelope("x@depth", depth_data("spot") | {"b": [], "a": []})
    assert levels.plain_levels(empty, DIFF_IN_ENVELOPE)[1:] == ([], [], [], [])
    no_bids = envelope("x@depth", depth_data("spot") | {"b": []})
    assert levels.plain_levels(no_bids, DIFF_IN_ENVELOPE)[1:] == ([], [], [61837.64], [1.54698])
    no_asks = envelope("x@depth", depth_data("spot") | {"a": []})
    assert levels.plain_levels(no_asks, DIFF_IN_ENVELOPE)[1:] == (
        [61737.63, 56854.58],
        [0.0, 0.0],
        [],
        [],
    )


def compact(data: dict) -> bytes:
    return envelope("btcusdt@depth", data)


@pytest.mark.parametrize(
    "variant",
    [
        "str",
        "spaces",
        "asks_first",
        "key_after",
        "no_dot",
        "two_dots",
        "leading_zero",
        "zero_price",
        "escape",
        "bare",
        "exponent",
        "trailing_dot",
        "leading_dot",
        "huge",
    ],
)
def test_plain_levels_declines_what_it_cannot_prove(market: str, variant: str) -> None:
    """Each declined message still goes through the general path: same event or FeedError."""
    data = depth_data(market)
    raw = {
        "str": compact(data).decode(),
        "spaces": orjson.dumps({"stream": "x@depth", "data": data}, option=orjson.OPT_INDENT_2),
        "asks_first": compact({k: v for k, v in data.items() if k != "b"} | {"b": data["b"]}),
        "key_after": compact(data | {"zz": 1}),
        "no_dot": compact(data | {"a": [["61800", "1.0"]]}),
        "two_dots": compact(data | {"a": [["61.800.3", "1.0"]]}),
        "leading_zero": compact(data | {"a": [["061800.3", "1.0"]]}),
        "zero_price": compact(data | {"a": [["0.00", "1.0"]]}),
        "escape": compact(data | {"s": "BTC\nUSDT"}),
        "bare": orjson.dumps(data),
        "exponent": compact(data | {"a": [["6.18e4", "1.0"]]}),
        "trailing_dot": compact(data | {"a": [["61800.", "1.0"]]}),
        "leading_dot": compact(data | {"a": [["61800.3", ".5"]]}),
        "huge": compact(data | {"a": [["1" + "0" * 400 + ".5", "1.0"]]}),
    }[variant]
    assert levels.plain_levels(raw, DIFF_IN_ENVELOPE) is None
    parser = BinanceParser(market)
    general = orjson.loads(raw)
    expected_data = general.get("data", general)
    if variant in ("two_dots", "zero_price", "huge"):
        with pytest.raises(FeedError) as info:
            parser.parse(raw)
        assert info.value.kind == BAD_NUMBER
        return
    diff = parser.parse(raw)
    assert isinstance(diff, DepthDiff)
    assert diff.last_id == expected_data["u"]
    assert diff.ask_prices == [float(p) for p, _ in expected_data["a"]]


def test_a_quote_escaped_into_a_key_cannot_pose_as_the_bids() -> None:
    data = depth_data("futures")
    del data["b"]
    raw = compact({**{k: v for k, v in data.items() if k != "a"}, 'x"b': [["1.0", "1.0"]], "a": []})
    assert b'"b":[' in raw
    assert refused("futures", raw) == MISSING_FIELD


def test_fast_and_general_paths_agree_on_every_tape_message(tapes_lines: dict) -> None:
    for market, lines in tapes_lines.items():
        parser = BinanceParser(market)
        fast = 0
        for raw in lines:
            if is_snapshot(raw):
                assert parse_snapshot(raw) == parse_snapshot(raw.decode())
                assert levels.plain_levels(raw, SNAPSHOT) is not None
                continue
            event = parser.parse(raw)
            assert event == parser.parse(raw.decode())
            if isinstance(event, DepthDiff):
                assert levels.plain_levels(raw, DIFF_IN_ENVELOPE) is not None
                fast += 1
        assert fast > 3000


def test_orjson_floats_equal_python_floats() -> None:
    """The fast path's numbers are orjson's, the general path's float()'s: they must agree."""
    rng = random.Random(20240808)
    texts = []
    for _ in range(200_000):
        whole = str(rng.randint(0, 10 ** rng.randint(0, 12)))
        texts.append(f"{whole}.{rng.randint(0, 10**9):0{rng.randint(1, 9)}d}"[: rng.randint(3, 24)])
    texts = [t for t in texts if t.count(".") == 1 and not t.endswith(".")]
    texts += ["0.1", "0.3", "61800.20", "9007199254740993.0", "0.00000001", "123456789012.12345678"]
    numbers = orjson.loads(("[" + ",".join(texts) + "]").encode())
    assert [float(t) for t in texts] == numbers
