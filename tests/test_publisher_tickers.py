"""The publisher's funding: and candles: channels and keys, from real ticker and candle rings."""

from __future__ import annotations

import math

import orjson
import redis
from test_publisher import SYMBOLS, Sub, counters, make_cfg, publisher, wait_for

from mdpipe.candles import CandleBuilder
from mdpipe.ingest.tickers import TickerState
from mdpipe.shm.writer import RingWriter
from mdpipe.venues.base import MarkPrice, Ticker

S = 1_000_000_000


def test_funding_and_candles_reach_redis_exactly(redis_server, instance):
    common = {"symbols": SYMBOLS, "capacity": 1 << 10, "exchange": "binance-futures"}
    tw = RingWriter.create(instance, "tickers.usdm.0", "ticker", **common)
    cw = RingWriter.create(instance, "candles_1s.usdm.0", "candle", **common)
    state = TickerState(tw, len(SYMBOLS))
    builder = CandleBuilder(cw, S, len(SYMBOLS), start_ns=0, grace_ns=0)
    cfg = make_cfg(instance, redis_server.url)
    sub = Sub(redis_server.url, "funding:*", "candles:*")
    with publisher(cfg, rings=2):
        mark = {"mark_price": 100.5, "funding_rate": -0.0001, "next_funding_ts_ns": 8 * 3600 * S}
        state.apply(0, MarkPrice("BTCUSDT", 1000, 100.5, mark), 5)
        state.apply(0, Ticker("BTCUSDT", 2000, {"last_price": 101.0, "volume_24h": 7.0}), 6)
        for i, (t, px) in enumerate([(10.1, 1.0), (10.5, 3.0), (10.9, 2.0), (11.2, 5.0)]):
            builder.on_trade(1, int(t * S), 0, i + 1, i + 1, i + 1, px, 0.5, i % 2 == 0)
        builder.on_trade(1, int(10.95 * S), 0, 9, 9, 9, 9.0, 1.0, True)  # late: amends 10 s
        # Tickers are conflated to the newest per symbol of a batch; candles all arrive.
        sub.pump(lambda m: sum(ch.startswith("candles:") for ch, _ in m) >= 2)
        sub.pump(lambda m: any(d.get("volume_24h") == 7.0 for ch, d in m))
        wait_for(lambda: counters(instance)["candles_published"] == 2, what="candle counts")
        wait_for(lambda: counters(instance)["funding_published"] >= 1, what="funding counts")
        r = redis.Redis.from_url(redis_server.url)
        key = r.get("candles:ETHUSDT:1s")
        funding_key = r.get("funding:BTCUSDT")
    funding = sub.on("funding:BTCUSDT")[-1]
    assert funding["mark_price"] == 100.5 and funding["funding_rate"] == -0.0001
    assert funding["next_funding_ts"] == 8 * 3600 * S and funding["last_price"] == 101.0
    assert funding["volume_24h"] == 7.0 and funding["exchange_ts"] == 2000 * 1_000_000
    assert funding["index_price"] is None and funding["open_interest"] is None  # never sent
    assert orjson.loads(funding_key) == funding
    got = sub.on("candles:ETHUSDT:1s")
    assert [(c["open_ts"], c["revision"], c["amended"]) for c in got] == [
        (10 * S, 0, False),
        (10 * S, 1, True),
    ]
    first, amended = got
    assert (first["open"], first["high"], first["low"], first["close"]) == (1.0, 3.0, 1.0, 2.0)
    assert first["trades"] == 3 and math.isclose(first["volume"], 1.5)
    assert (amended["high"], amended["close"], amended["trades"]) == (9.0, 2.0, 4)
    assert first["final"] and not first["restart"] and first["interval"] == "1s"
    assert orjson.loads(key) == amended
    sub.close()
    tw.close(unlink=True)
    cw.close(unlink=True)
