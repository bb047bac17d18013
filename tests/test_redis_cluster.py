"""The publisher and the consumer library on a real local Redis Cluster of 3 masters."""

from __future__ import annotations

import time

import redis
from conftest import LocalRedisCluster
from test_publisher import (
    book_writer,
    counters,
    make_cfg,
    publisher,
    trade_writer,
    wait_for,
)
from test_redis_consumer import books_until

from mdpipe.redis_consumer import StreamReader, Subscriber
from mdpipe.redis_names import DIRECTORY_KEY
from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter

SYMBOLS = [f"C{k:02d}USDT" for k in range(50)]
ROUNDS = 4


def put_book(w: RingWriter, sid: int, i: int) -> None:
    w.bids[0] = (100.0 + i, 1.0)
    w.asks[0] = (101.0 + i, 1.0)
    now = time.time_ns()
    w.commit_book(sid, L.FLAG_SYNCED, now, now, i, i, i, 1, 1)


def put_trade(w: RingWriter, sid: int, i: int) -> None:
    now = time.time_ns()
    w.commit_trade(sid, 0, now, now, now, 1000 + i, 1000 + i, 1000 + i, 100.0 + i, 0.5, 1)


def test_books_and_trades_of_50_symbols_land_on_every_shard_and_all_arrive(redis_cluster, instance):
    bw = book_writer(instance, symbols=SYMBOLS, capacity=1 << 12)
    tw = trade_writer(instance, symbols=SYMBOLS, capacity=1 << 12)
    cfg = make_cfg(instance, redis_cluster.url, "publisher.streams=true")
    with publisher(cfg, rings=2):
        for sid in range(len(SYMBOLS)):
            put_book(bw, sid, 0)
        wait_for_books = lambda: counters(instance)["books_published"] == len(SYMBOLS)  # noqa: E731
        deadline = time.monotonic() + 20
        while not wait_for_books():
            assert time.monotonic() < deadline, counters(instance)
            time.sleep(0.05)
        sub = Subscriber(redis_cluster.url, SYMBOLS)
        trades = StreamReader(redis_cluster.url, SYMBOLS)
        snaps = books_until(sub, lambda ev: sum(e.snapshot for e in ev) == len(SYMBOLS))
        for i in range(1, ROUNDS + 1):
            for sid in range(len(SYMBOLS)):
                put_book(bw, sid, i)
                put_trade(tw, sid, i * 100 + sid)
        want = len(SYMBOLS) * ROUNDS
        events = books_until(
            sub,
            lambda ev: (
                sum(e.kind == "book" for e in ev) == want
                and sum(e.kind == "trade" for e in ev) == want
            ),
        )
        streamed: list = []
        deadline = time.monotonic() + 20
        while len(streamed) < want:
            assert time.monotonic() < deadline, len(streamed)
            streamed += [e for e in trades.read(0.5) if e.kind == "entry"]
        sub.close()
        trades.close()
        c = counters(instance)
    assert all(e.data["seq"] == 1 for e in snaps)
    assert not any(e.kind in ("gap", "reset") for e in events)
    for sym in SYMBOLS:
        seqs = [e.data["seq"] for e in events if e.kind == "book" and e.symbol == sym]
        assert seqs == list(range(2, ROUNDS + 2)), sym
        tids = [e.data["trade_id"] for e in events if e.kind == "trade" and e.symbol == sym]
        assert tids == [1000 + i * 100 + SYMBOLS.index(sym) for i in range(1, ROUNDS + 1)]
    assert sorted(e.data["trade_id"] for e in streamed) == sorted(
        e.data["trade_id"] for e in events if e.kind == "trade"
    )
    assert c["redis_errors"] == 0 and c["books_conflated"] == 0
    # Every master holds some of the symbols' keys, each symbol's names in one slot.
    per_node = []
    for server in redis_cluster.servers:
        node = redis.Redis(port=server.port)
        keys = [k.decode() for k in node.scan_iter("orderbook:{C*")]
        per_node.append(len(keys))
        for key in keys:
            sym = key[len("orderbook:{") : -1]
            assert node.exists(f"trades:{{{sym}}}") and node.exists(f"market_data:{{{sym}}}")
        node.close()
    assert sum(per_node) == len(SYMBOLS) and all(n > 0 for n in per_node), per_node


def test_the_directory_names_hash_tagged_sharded_channels(redis_cluster, instance):
    bw = book_writer(instance, symbols=["BTCUSDT"])
    with publisher(make_cfg(instance, redis_cluster.url), rings=1):
        put_book(bw, 0, 1)
        client = redis.RedisCluster.from_url(redis_cluster.url)
        deadline = time.monotonic() + 20
        while not client.hexists(DIRECTORY_KEY, "binance-futures:BTCUSDT"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        names = client.hget(DIRECTORY_KEY, "binance-futures:BTCUSDT")
        client.close()
    assert b'"orderbook":"orderbook:{BTCUSDT}"' in names and b'"cluster":true' in names


def test_a_master_killed_and_restarted_loses_no_trade(tmp_path, instance):
    cluster = LocalRedisCluster(tmp_path)  # its own: this test stops a node
    cluster.start()
    try:
        tw = trade_writer(instance, symbols=SYMBOLS, capacity=1 << 12)
        cfg = make_cfg(instance, cluster.url, "publisher.reconnect_max=0.3")
        with publisher(cfg, rings=1):
            for sid in range(len(SYMBOLS)):
                put_trade(tw, sid, sid)
            wait_for(lambda: counters(instance)["trades_published"] == len(SYMBOLS))
            cluster.servers[1].stop()
            for sid in range(len(SYMBOLS)):
                put_trade(tw, sid, 100 + sid)
            wait_for(lambda: counters(instance)["g_redis_up"] == 0, what="the outage noticed")
            cluster.servers[1].start()  # same port and nodes.conf: it takes its slots back
            wait_for(
                lambda: counters(instance)["trades_published"] == 2 * len(SYMBOLS),
                timeout=60,
                what="every trade sent once the master is back",
            )
            c = counters(instance)
    finally:
        cluster.stop()
    assert c["dropped_trades"] == c["trades_lost"] == 0 and c["redis_errors"] >= 1
