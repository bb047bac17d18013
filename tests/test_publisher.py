"""The publisher against a real redis-server and real rings: formats, order, conflation, lapping,
market data, Redis outages, TLS and passwords, the process entry point, the example subscriber."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
from conftest import REPO, RedisServer, free_port

from mdpipe import config
from mdpipe.publisher import run_publisher
from mdpipe.publisher.sink import make_client
from mdpipe.readers import attach
from mdpipe.redis_names import DIRECTORY_KEY, Templates, symbol_names
from mdpipe.shm import layout as L
from mdpipe.shm.segment import read_status
from mdpipe.shm.writer import RingWriter

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
EXCHANGE = "binance-futures"
LEVELS = 5


# ----- helpers ----------------------------------------------------------------------------


def make_cfg(instance: str, url: str, *extra: str) -> config.Config:
    return config.load(
        None,
        overrides=[
            f"instance={instance}",
            f"redis.url={url}",
            f"publisher.levels={LEVELS}",
            *extra,
        ],
    )


def wait_for(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def counters(instance: str) -> dict[str, int]:
    return read_status(instance, "publisher").counters


@contextlib.contextmanager
def publisher(cfg: config.Config, *, rings: int, **kw: object) -> Iterator[dict]:
    """Run the publisher in a thread until the block ends; yields its final counters dict."""
    stop = threading.Event()
    out: dict = {}

    def target() -> None:
        try:
            out.update(run_publisher(cfg, stop, **kw))
        except BaseException as exc:  # surfaced in the test thread
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()

    def ready() -> bool:
        if "error" in out:
            raise out["error"]
        try:
            return counters(cfg.instance).get("g_rings") == rings
        except FileNotFoundError:
            return False
        except Exception:
            return False

    wait_for(ready, what=f"the publisher to attach {rings} rings")
    try:
        yield out
    finally:
        stop.set()
        t.join(15)
        assert not t.is_alive(), "the publisher did not stop"
        if "error" in out:
            raise out["error"]


class Sub:
    """A pattern subscriber collecting (channel, payload) in arrival order."""

    def __init__(self, url: str, *patterns: str, **kw: object) -> None:
        self.r = redis.Redis.from_url(url, **kw)
        self.ps = self.r.pubsub()
        self.ps.psubscribe(*patterns)
        confirmed = 0
        while confirmed < len(patterns):  # subscribed before anything is published
            m = self.ps.get_message(timeout=5)
            assert m is not None, "no psubscribe confirmation"
            confirmed += m["type"] == "psubscribe"
        self.msgs: list[tuple[str, dict]] = []

    def pump(self, until: Callable[[list[tuple[str, dict]]], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not until(self.msgs):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {len(self.msgs)} messages")
            m = self.ps.get_message(timeout=0.05)
            if m is not None and m["type"] == "pmessage":
                self.msgs.append((m["channel"].decode(), orjson.loads(m["data"])))

    def on(self, prefix: str) -> list[dict]:
        return [d for ch, d in self.msgs if ch.startswith(prefix)]

    def close(self) -> None:
        self.ps.close()
        self.r.close()


def book_writer(instance: str, ring: str = "books.usdm.0", **kw: object) -> RingWriter:
    args = {"symbols": SYMBOLS, "capacity": 1 << 12, "depth": 10, "exchange": EXCHANGE} | kw
    return RingWriter.create(instance, ring, "book", **args)


def trade_writer(instance: str, ring: str = "trades.usdm.0", **kw: object) -> RingWriter:
    args = {"symbols": SYMBOLS, "capacity": 1 << 12, "exchange": EXCHANGE} | kw
    return RingWriter.create(instance, ring, "trade", **args)


def put_book(
    w: RingWriter, sid: int, i: int, *, nb: int = 7, na: int = 3, synced: bool = True
) -> dict:
    """Commit a book and return the payload the publisher must send for it (minus timestamp)."""
    w.bids[:] = 0
    w.asks[:] = 0
    bids = [[100.0 - 0.1 * k + i * 1e-3, 0.1 + 0.2 * k] for k in range(nb)]
    asks = [[100.5 + 0.1 * k + i * 1e-3, 1.0 / 3 + k] for k in range(na)]
    if nb:
        w.bids[:nb] = bids
    if na:
        w.asks[:na] = asks
    ets = 1_723_100_000_000_000_000 + i * 1_000_000
    w.commit_book(
        sid, L.FLAG_SYNCED if synced else 0, ets, ets + 5, 10 * i, 10 * i + 9, 10 * i + 1, nb, na
    )
    return {
        "symbol": SYMBOLS[sid],
        "exchange": EXCHANGE,
        "bids": bids[:LEVELS],
        "asks": asks[:LEVELS],
        "first_update_id": 10 * i,
        "last_update_id": 10 * i + 9,
        "synced": synced,
        "exchange_ts": ets,
    }


def put_trade(
    w: RingWriter,
    sid: int,
    i: int,
    *,
    ts: int | None = None,
    px: float | None = None,
    qty: float = 0.1 + 0.2,
) -> dict:
    ets = ts if ts is not None else time.time_ns()
    price = px if px is not None else 60_000.0 + i * 0.01
    side = 1 if i % 3 else -1
    flags = 0 if side > 0 else L.FLAG_BUYER_MAKER
    w.commit_trade(
        sid, flags, ets, ets + 1, ets + 2, 1000 + i, 1000 + i, 1000 + i, price, qty, side
    )
    return {
        "symbol": SYMBOLS[sid],
        "exchange": EXCHANGE,
        "trade_id": 1000 + i,
        "price": price,
        "quantity": qty,
        "side": "buy" if side > 0 else "sell",
        "is_buyer_maker": side < 0,
        "exchange_ts": ets,
    }


def without_ts(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("timestamp", "seq")}


# ----- formats, order, keys -----------------------------------------------------------------


def test_every_trade_in_order_every_book_without_gaps_exact_payloads(redis_server, instance):
    bw, tw = book_writer(instance), trade_writer(instance)
    cfg = make_cfg(instance, redis_server.url)
    sub = Sub(redis_server.url, "orderbook:*", "trades:*")
    n = 400
    books: dict[int, list[dict]] = {0: [], 1: []}
    trades = []
    with publisher(cfg, rings=2):
        for i in range(n):
            sid = i % 2
            books[sid].append(put_book(bw, sid, i, nb=7 if i % 5 else 2))
            trades.append(put_trade(tw, sid, i))
            if i % 10 == 9:
                time.sleep(0.002)  # normal load: the publisher keeps up
        sub.pump(lambda m: len(m) >= 2 * n)
        # Counters move just after Redis confirms (books and trades each their own), gauges
        # every 0.1 s.
        wait_for(lambda: counters(instance).get("trades_published") == n)
        wait_for(lambda: counters(instance).get("books_published") == n)
        wait_for(lambda: counters(instance).get("g_lag_records") == 0)
        c = counters(instance)
        r = redis.Redis.from_url(redis_server.url)
        last_book = orjson.dumps(sub.on("orderbook:BTCUSDT")[-1])
        wait_for(lambda: r.get("orderbook:BTCUSDT") == last_book, what="the newest book key")
        keys = {k: r.get(k) for k in ("orderbook:BTCUSDT", "trades:ETHUSDT", "market_data:BTCUSDT")}
        ttls = [r.ttl(k) for k in keys]
    got_trades = sub.on("trades:")
    assert [without_ts(t) for t in got_trades] == trades
    for t in got_trades:
        assert list(t) == ["symbol", "exchange", "trade_id", "price", "quantity", "side",
                           "is_buyer_maker", "exchange_ts", "timestamp"]  # fmt: skip
        assert t["timestamp"] >= t["exchange_ts"]
    assert got_trades[0]["quantity"] == 0.1 + 0.2 == 0.30000000000000004  # the exact float
    for sid, sym in enumerate(SYMBOLS):
        got = [d for ch, d in sub.msgs if ch == f"orderbook:{sym}"]
        assert [d["seq"] for d in got] == list(range(1, n // 2 + 1))  # no gap at normal load
        assert [without_ts(d) for d in got] == books[sid]
        assert list(got[0]) == ["symbol", "exchange", "bids", "asks", "first_update_id",
                                "last_update_id", "seq", "synced", "exchange_ts", "timestamp"]  # fmt: skip
    assert len(books[0][1]["bids"]) == LEVELS and len(books[0][0]["bids"]) == 2  # levels, counts
    assert c["books_published"] == n and c["trades_published"] == n
    assert c["books_conflated"] == c["trades_lost"] == c["dropped_trades"] == c["redis_errors"] == 0
    assert c["g_redis_up"] == 1 and c["g_rings"] == 2 and c["g_lag_records"] == 0
    # Late subscribers: the newest book, trade and ticker are keys with the TTL.
    assert (
        orjson.loads(keys["orderbook:BTCUSDT"])
        == [d for ch, d in sub.msgs if ch == "orderbook:BTCUSDT"][-1]
    )
    assert orjson.loads(keys["trades:ETHUSDT"]) == got_trades[-1]
    assert orjson.loads(keys["market_data:BTCUSDT"])["symbol"] == "BTCUSDT"
    assert all(0 < ttl <= cfg.redis.key_ttl for ttl in ttls)
    sub.close()


def test_market_data_rolling_24h_figures_and_key(redis_server, instance):
    bw, tw = book_writer(instance), trade_writer(instance)
    cfg = make_cfg(instance, redis_server.url, "redis.key_ttl=60")
    sub = Sub(redis_server.url, "market_data:BTCUSDT")
    now = time.time_ns()
    hour = 3600 * 10**9
    seq = [  # (age, price, quantity)
        (25 * hour, 1.0, 1000.0),  # older than 24 h: not counted
        (23 * hour, 60_500.0, 0.1),
        (5 * hour, 59_000.25, 0.2),
        (1 * hour, 61_000.5, 0.3),
        (0, 60_000.0, 0.004),
    ]
    with publisher(cfg, rings=2, market_data_interval=0.0):
        for i, (age, px, qty) in enumerate(seq):
            put_trade(tw, 0, i, ts=now - age, px=px, qty=qty)
        w = bw
        w.bids[0] = (59_999.5, 1.0)
        w.asks[0] = (60_000.5, 2.0)
        w.commit_book(0, L.FLAG_SYNCED, now, now, 1, 1, 0, 1, 1)
        sub.pump(lambda m: any(d["bid_price"] is not None and d["trades_24h"] == 4 for _, d in m))
        md = sub.msgs[-1][1]
        r = redis.Redis.from_url(redis_server.url)
        key = orjson.loads(r.get("market_data:BTCUSDT"))
        ttl = r.ttl("market_data:BTCUSDT")
        # A book that is not synced gives no bid/ask: never a guessed price.
        w.commit_book(0, 0, now, now, 2, 2, 1, 1, 1)
        sub.pump(lambda m: m[-1][1]["bid_price"] is None)
    assert list(md) == ["symbol", "last_price", "bid_price", "ask_price", "mid_price", "spread_bps",
                        "volume_24h", "high_24h", "low_24h", "trades_24h", "updated_at"]  # fmt: skip
    assert md["symbol"] == "BTCUSDT" and md["last_price"] == 60_000.0
    assert md["bid_price"] == 59_999.5 and md["ask_price"] == 60_000.5
    assert md["mid_price"] == 60_000.0
    assert md["spread_bps"] == pytest.approx(1.0 / 60_000.0 * 1e4)
    assert md["volume_24h"] == math.fsum([0.1, 0.2, 0.3, 0.004])
    assert md["high_24h"] == 61_000.5 and md["low_24h"] == 59_000.25
    assert md["trades_24h"] == 4
    assert abs(md["updated_at"] - time.time_ns()) < 60 * 10**9
    # The key is the newest summary; the one examined may be a moment older.
    assert {k: v for k, v in key.items() if k != "updated_at"} == {
        k: v for k, v in md.items() if k != "updated_at"
    }
    assert key["updated_at"] >= md["updated_at"] and 0 < ttl <= 60
    sub.close()


def test_symbols_added_to_a_running_ring_are_published(redis_server, instance):
    tw = trade_writer(instance)
    cfg = make_cfg(instance, redis_server.url)
    sub = Sub(redis_server.url, "trades:*")
    with publisher(cfg, rings=1):
        put_trade(tw, 0, 1)
        sid = tw.add_symbol("SOLUSDT")
        tw.commit_trade(sid, 0, 5, 5, 5, 77, 77, 77, 150.25, 2.0, -1)
        sub.pump(lambda m: len(m) == 2)
    assert sub.msgs[1][0] == "trades:SOLUSDT"
    assert sub.msgs[1][1]["symbol"] == "SOLUSDT" and sub.msgs[1][1]["side"] == "sell"
    sub.close()


# ----- falling behind -----------------------------------------------------------------------


def test_conflation_under_a_burst_is_counted_and_newest_books_arrive(redis_server, instance):
    cfg = make_cfg(instance, redis_server.url, "publisher.batch=256")
    sub = Sub(redis_server.url, "orderbook:*")
    n = 20_000
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    with publisher(cfg, rings=0):
        # A shard that appears while the publisher runs is read from its first record.
        bw = RingWriter.create(
            instance,
            "books.usdm.1",
            "book",
            symbols=syms,
            capacity=1 << 15,
            depth=5,
            exchange=EXCHANGE,
        )
        for i in range(n):  # far faster than books can be published
            bw.bids[0] = (100.0 + i, 1.0)
            bw.asks[0] = (101.0 + i, 1.0)
            bw.commit_book(i % 3, L.FLAG_SYNCED, i, i, i, i, i, 1, 1)
        wait_for(
            lambda: counters(instance)["g_rings"] == 1 and counters(instance)["g_lag_records"] == 0
        )
        wait_for(
            lambda: (
                counters(instance)["books_published"] + counters(instance)["books_conflated"] == n
            )
        )
        c = counters(instance)
        last = {s: n // 3 + (1 if k < n % 3 else 0) for k, s in enumerate(syms)}
        sub.pump(
            lambda m: all(any(d["seq"] == last[s] for ch, d in m if ch.endswith(s)) for s in syms)
        )
        r = redis.Redis.from_url(redis_server.url)

        def keys() -> dict[str, int]:
            return {s: orjson.loads(r.get(f"orderbook:{s}") or b'{"seq":0}')["seq"] for s in syms}

        wait_for(lambda: keys() == last, what="the newest book keys")
    assert c["books_conflated"] > 0
    assert c["books_published"] + c["books_conflated"] == n  # every book accounted for
    assert c["books_lost"] == 0
    assert len(sub.msgs) == c["books_published"]
    for s in syms:  # order kept, gaps only where conflated
        seqs = [d["seq"] for ch, d in sub.msgs if ch.endswith(s)]
        assert seqs == sorted(seqs) and seqs[-1] == last[s]
    sub.close()


def test_a_lapped_publisher_counts_exactly_the_trades_it_lost(redis_server, instance):
    cfg = make_cfg(instance, redis_server.url)
    tw = trade_writer(instance, capacity=256)
    sub = Sub(redis_server.url, "trades:*")
    n = 20_000
    with publisher(cfg, rings=1):
        for i in range(n):  # no pause: the 256-slot ring laps the publisher
            tw.commit_trade(i % 2, 0, i, i, i, i, i, i, 1.0, 1.0, 1)
        wait_for(lambda: counters(instance).get("g_lag_records") == 0)
        wait_for(
            lambda: sum(counters(instance)[k] for k in ("trades_published", "trades_lost")) == n
        )
        c = counters(instance)
        sub.pump(lambda m: len(m) == c["trades_published"])
    assert c["trades_lost"] > 0
    assert c["trades_published"] + c["trades_lost"] == n
    ids = [d["trade_id"] for _, d in sub.msgs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == c["trades_published"]
    assert ids[-1] == n - 1  # the newest trades were published
    sub.close()


# ----- Redis outages ------------------------------------------------------------------------

WRITER = r"""
import signal, sys, time
from mdpipe.shm.writer import RingWriter
inst = sys.argv[1]
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
kw = dict(symbols=["BTCUSDT", "ETHUSDT"], capacity=1 << 14, exchange="binance-futures")
bw = RingWriter.create(inst, "books.usdm.0", "book", depth=10, **kw)
tw = RingWriter.create(inst, "trades.usdm.0", "trade", **kw)
i = 0
while not stop:
    now = time.time_ns()
    bw.bids[0] = (100.0 + i * 0.01, 1.0)
    bw.asks[0] = (100.5 + i * 0.01, 2.0)
    bw.commit_book(i % 2, 1, now, now, i, i, i, 1, 1)
    tw.commit_trade(i % 2, 0, now, now, now, i, i, i, 100.0 + i * 0.01, 0.5, 1)
    i += 1
    time.sleep(0.001)
bw.close()
tw.close()
"""


def ring_cursor(instance: str, ring: str) -> int:
    return read_status(instance, ring).write_cursor


def test_redis_killed_and_restarted(redis_server, instance):
    """Books: newest re-sent, the rest counted as dropped. Trades: every one, late and in order."""
    cfg = make_cfg(
        instance, redis_server.url, "publisher.reconnect_max=0.5", "publisher.streams=true"
    )
    with publisher(cfg, rings=0) as final:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, instance], cwd=REPO)
        try:
            wait_for(lambda: counters(instance).get("g_rings") == 2, what="the writer's rings")
            sub = Sub(redis_server.url, "trades:*")
            sub.pump(lambda m: len(m) >= 200)
            sub.close()
            t0, c0 = time.monotonic(), ring_cursor(instance, "trades.usdm.0")
            time.sleep(1.0)
            before = (ring_cursor(instance, "trades.usdm.0") - c0) / (time.monotonic() - t0)

            redis_server.stop()
            wait_for(lambda: counters(instance).get("g_redis_up") == 0, what="g_redis_up 0")
            t0, c0 = time.monotonic(), ring_cursor(instance, "trades.usdm.0")
            time.sleep(1.0)
            during_n = ring_cursor(instance, "trades.usdm.0") - c0
            during = during_n / (time.monotonic() - t0)
            down = counters(instance)
        finally:
            writer.send_signal(signal.SIGTERM)
            assert writer.wait(10) == 0
        wait_for(lambda: counters(instance).get("g_lag_books_usdm_0") == 0, what="books drained")
        stalled = counters(instance)
        published_before = stalled["books_published"]
        total = ring_cursor(instance, "trades.usdm.0")

        redis_server.start()
        wait_for(lambda: counters(instance).get("g_redis_up") == 1, what="the reconnect")
        # The newest book of each symbol is re-sent, counted apart: it was counted when read.
        wait_for(lambda: counters(instance).get("books_republished") == 2)
        assert counters(instance)["books_published"] == published_before
        wait_for(
            lambda: counters(instance).get("trades_published") == total, what="trades caught up"
        )
        up = counters(instance)
        r = redis.Redis.from_url(redis_server.url)
        with attach(instance, "books.usdm.0") as reader:
            newest = {s: int(reader.latest(s)["symbol_seq"]) for s in SYMBOLS}
        keys = {s: orjson.loads(r.get(f"orderbook:{s}"))["seq"] for s in SYMBOLS}
        md = [r.get(f"market_data:{s}") for s in SYMBOLS]
        ttl = r.ttl("orderbook:BTCUSDT")
        # Redis lost everything it had: what it has now began during the outage.
        streamed = {
            s: [orjson.loads(e[b"d"]) for _, e in r.xrange(f"trades_stream:{s}")] for s in SYMBOLS
        }

        # Publishing resumes, here with a restarted writer (its seq starts again at 1).
        sub = Sub(redis_server.url, "orderbook:*", "trades:*")
        bw, tw = book_writer(instance, capacity=1 << 14), trade_writer(instance, capacity=1 << 14)
        put_book(bw, 0, 1)
        put_trade(tw, 0, 1)
        sub.pump(lambda m: len(m) >= 2)
        sub.close()
    assert down["g_redis_up"] == 0 and down["redis_errors"] >= 1
    assert down["dropped_books"] > 0 and down["dropped_trades"] == 0
    # The trades ring kept every trade of the outage for the publisher to catch up from.
    assert stalled["trades_published"] < total - during_n
    assert stalled["g_lag_trades_usdm_0"] >= during_n
    assert during >= 0.5 * before and during_n > 200  # the writer was never slowed
    assert up["redis_reconnects"] >= 1 and up["g_redis_up"] == 1
    assert keys == newest  # the newest book of every symbol re-published at once
    assert all(m is not None for m in md) and 0 < ttl <= cfg.redis.key_ttl
    assert up["trades_published"] == total and up["trades_lost"] == up["dropped_trades"] == 0
    for sid, sym in enumerate(SYMBOLS):
        ids = [t["trade_id"] for t in streamed[sym]]
        first = ids[0]
        assert first % 2 == sid and ids == list(range(first, total, 2)), sym  # none, in order
        assert first <= total - during_n
    assert [d["seq"] for ch, d in sub.msgs if ch.startswith("orderbook")] == [1]
    assert final["trades_published"] == up["trades_published"] + 1


# ----- TLS and passwords --------------------------------------------------------------------


def start_tls_redis(tmp: Path, password: str) -> tuple[subprocess.Popen, int, Path] | None:
    """A redis-server with TLS only and a password, or None when it was built without TLS."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server"), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
         "--tls-auth-clients", "no", "--requirepass", password, "--save", "", "--appendonly", "no",
         "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None  # refused --tls-port: no TLS support in this build
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, port, cert
        time.sleep(0.02)
    proc.kill()
    return None


def test_tls_url_and_password_from_the_environment(tmp_path, instance, monkeypatch):
    from redis.connection import SSLConnection

    monkeypatch.setenv("PUBTEST_REDIS_PW", "tls-s3cret")
    server = start_tls_redis(tmp_path, "tls-s3cret")
    port = server[1] if server else free_port()
    ca = server[2] if server else tmp_path / "ca.pem"
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    cfg = make_cfg(instance, url, "redis.password_env=PUBTEST_REDIS_PW")
    pool = make_client(cfg.redis.url, cfg.redis_password).connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["password"] == "tls-s3cret"
    assert pool.connection_kwargs["ssl_ca_certs"] == str(ca)
    parser = pool.connection_class(**pool.connection_kwargs)._parser
    assert type(parser).__name__ == "_HiredisParser"
    if server is None:
        return  # this redis-server cannot do TLS: the client configuration is what we can check
    proc = server[0]
    try:
        tw = trade_writer(instance)
        sub = Sub(url, "trades:*", password="tls-s3cret")
        with publisher(cfg, rings=1):
            wait_for(lambda: counters(instance).get("g_redis_up") == 1)
            sent = put_trade(tw, 1, 7)
            sub.pump(lambda m: len(m) == 1)
        assert without_ts(sub.msgs[0][1]) == sent
        sub.close()
    finally:
        proc.kill()
        proc.wait()


def test_password_from_the_environment_and_a_wrong_one(tmp_path, instance, monkeypatch):
    server = RedisServer(tmp_path, password="pw-1")
    server.start()
    try:
        tw = trade_writer(instance)
        cfg = make_cfg(instance, server.url, "redis.password_env=PUBTEST_REDIS_PW")
        monkeypatch.setenv("PUBTEST_REDIS_PW", "wrong")
        with publisher(cfg, rings=1):  # refused: counted, retried, never a crash
            wait_for(lambda: counters(instance).get("redis_errors", 0) >= 2)
            assert counters(instance)["g_redis_up"] == 0
            waiting = put_trade(tw, 0, 1)
            # Kept in the ring, not dropped: the next publisher resumes at its cursor.
            wait_for(lambda: counters(instance).get("g_lag_trades_usdm_0") == 1)
            assert counters(instance)["dropped_trades"] == 0
        monkeypatch.setenv("PUBTEST_REDIS_PW", "pw-1")
        sub = Sub(server.url, "trades:*", password="pw-1")
        with publisher(cfg, rings=1):
            # A publisher just started may not have named its counters yet.
            wait_for(lambda: counters(instance).get("g_redis_up") == 1)
            sent = put_trade(tw, 0, 2)
            sub.pump(lambda m: len(m) == 2)
        assert [without_ts(d) for _, d in sub.msgs] == [waiting, sent]
        sub.close()
    finally:
        server.stop()


# ----- the process and the example subscriber -----------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_process_entry_point_pins_publishes_and_exits_on_sigterm(redis_server, instance, tmp_path):
    conf = tmp_path / "pub.toml"
    conf.write_text(f'[redis]\nurl = "{redis_server.url}"\n[publisher]\nlevels = 3\n')
    cmd = [sys.executable, "-m", "mdpipe.publisher", "--config", str(conf), "--instance", instance]
    proc = subprocess.Popen([*cmd, "--set", "publisher.core=0"], cwd=REPO, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(f"/dev/shm/mdpipe.{instance}.publisher"))
        wait_for(lambda: counters(instance).get("g_redis_up") == 1)
        assert os.sched_getaffinity(proc.pid) == {0}
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(1.0)
        idle = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        assert idle < 0.2, f"an idle publisher used {idle:.0%} of a core"
        sub = Sub(redis_server.url, "orderbook:*")
        bw = book_writer(instance)  # discovered while running
        sent = put_book(bw, 1, 3)
        sub.pump(lambda m: len(m) == 1)
        assert sub.msgs[0][1]["bids"] == sent["bids"][:3]
        second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1 and "another publisher" in second.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        sub.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_example_subscriber_reports_gaps_restarts_and_skips_duplicates(redis_server):
    r = redis.Redis.from_url(redis_server.url)

    def book(seq: int, ts: int) -> bytes:
        return orjson.dumps(
            {"symbol": "BTCUSDT", "exchange": EXCHANGE, "bids": [[1.5, 2.0]], "asks": [[1.6, 1.0]],
             "first_update_id": seq, "last_update_id": seq, "seq": seq, "synced": True,
             "exchange_ts": ts, "timestamp": ts}
        )  # fmt: skip

    r.set("orderbook:BTCUSDT", book(10, 100))
    names = symbol_names(Templates(), EXCHANGE, "BTCUSDT", segment=False, cluster=False)
    r.hset(DIRECTORY_KEY, f"{EXCHANGE}:BTCUSDT", names.to_json())
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "readers" / "redis_subscriber.py"), "--url", redis_server.url,
         "--count", "5", "--timeout", "20", "BTCUSDT"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = proc.stdout.readline()
    assert first.startswith("snapshot BTCUSDT book seq=10 bid 1.5 x 2.0")
    wait_for(lambda: r.pubsub_numsub("trades:BTCUSDT")[0][1] == 1)
    r.publish("orderbook:BTCUSDT", book(10, 100))  # already seen (re-sent after an outage)
    r.publish("orderbook:BTCUSDT", book(11, 110))
    r.publish("orderbook:BTCUSDT", book(15, 150))  # 3 missed
    r.publish("orderbook:BTCUSDT", book(1, 200))  # writer restarted
    r.publish("orderbook:BTCUSDT", book(2, 210))
    r.publish(
        "trades:BTCUSDT",
        orjson.dumps(
            {
                "symbol": "BTCUSDT",
                "exchange": EXCHANGE,
                "trade_id": 5,
                "price": 1.55,
                "quantity": 0.5,
                "side": "sell",
                "timestamp": 300,
            }
        ),
    )
    out = first + proc.communicate(timeout=30)[0]
    assert proc.returncode == 0
    lines = out.splitlines()
    assert "binance-futures:BTCUSDT GAP: seq 11 -> 15, 3 book update(s) not received" in lines
    assert "binance-futures:BTCUSDT RESET: seq 15 -> 1, the ingest writer restarted" in lines
    assert sum("book seq=10" in line for line in lines) == 1
    assert "BTCUSDT trade 5 sell 0.5 @ 1.55" in lines
    assert lines[-1] == (
        "received 5 messages; 1 gaps (3 books not received), 1 writer restarts, 0 reconnects"
    )


def test_an_outage_longer_than_the_trades_ring_loses_exactly_what_was_overwritten(
    redis_server, instance
):
    tw = trade_writer(instance, capacity=1 << 12)
    cfg = make_cfg(
        instance, redis_server.url, "publisher.reconnect_max=0.3", "publisher.streams=true"
    )
    with publisher(cfg, rings=1):
        put_trade(tw, 0, 0)
        wait_for(lambda: counters(instance).get("trades_published") == 1)
        redis_server.stop()
        for i in range(1, 6001):  # more than the ring holds
            put_trade(tw, 0, i)
        wait_for(lambda: counters(instance).get("g_redis_up") == 0)
        redis_server.start()
        wait_for(
            lambda: (
                counters(instance)["trades_published"] + counters(instance)["trades_lost"] == 6001
            ),
            what="caught up",
        )
        c = counters(instance)
        r = redis.Redis.from_url(redis_server.url)
        ids = [orjson.loads(e[b"d"])["trade_id"] for _, e in r.xrange("trades_stream:BTCUSDT")]
    assert c["trades_lost"] > 0 and c["dropped_trades"] == 0
    assert c["trades_published"] + c["trades_lost"] == 6001
    # What the ring still held went out in order: the newest trades, none missing.
    assert ids == list(range(7001 - len(ids), 7001)) and len(ids) == 6000 - c["trades_lost"]


def test_trades_sent_again_after_a_refused_round_trip_count_once_in_the_24h_figures(
    redis_server, instance
):
    tw = trade_writer(instance)
    cfg = make_cfg(instance, redis_server.url, "publisher.reconnect_max=0.3")
    admin = redis.Redis.from_url(redis_server.url)
    sub = Sub(redis_server.url, "trades:*", "market_data:*")
    with publisher(cfg, rings=1, market_data_interval=0.0):
        put_trade(tw, 0, 0)
        wait_for(lambda: counters(instance).get("trades_published") == 1)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")  # every SET refused (OOM); PUBLISH still works
        for i in range(1, 11):
            put_trade(tw, 0, i)
        wait_for(lambda: counters(instance).get("redis_errors", 0) >= 2, what="refused round trips")
        admin.config_set("maxmemory", "0")
        wait_for(lambda: counters(instance).get("trades_published") == 11, what="trades sent again")
        px = put_trade(tw, 0, 11)["price"]  # its ticker counts every trade so far, each once
        sub.pump(lambda m: any(d.get("trade_id") == 1011 for _, d in m))
        sub.pump(lambda m: m[-1][0].startswith("market_data:") and m[-1][1]["last_price"] == px)
    c = counters(instance)
    tickers = [d["trades_24h"] for ch, d in sub.msgs if ch.startswith("market_data:")]
    assert tickers[-1] == max(tickers) == 12 and c["dropped_trades"] == 0
    # Each trade at least once (a refused round trip is sent again), in order once repeats
    # (not newer than the last one seen) are skipped, as the consumer library does.
    kept: list[int] = []
    for ch, d in sub.msgs:
        if ch.startswith("trades:") and (not kept or d["trade_id"] > kept[-1]):
            kept.append(d["trade_id"])
    assert kept == list(range(1000, 1012))
    sub.close()
    admin.close()
