"""mdpipe.redis_consumer against a real publisher and Redis: no false gaps, real ones exact,
Streams resumed, venues apart, bad input in one line."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import orjson
import pytest
import redis
from conftest import REPO, refused_port
from test_publisher import (
    EXCHANGE,
    SYMBOLS,
    book_writer,
    counters,
    make_cfg,
    publisher,
    put_book,
    put_trade,
    trade_writer,
    wait_for,
)
from test_supervisor import Running

from mdpipe.redis_consumer import ConsumerError, Position, StreamReader, Subscriber
from mdpipe.redis_names import DIRECTORY_KEY

LIVE_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]  # config/demo.toml
REAL_GAP_COUNTERS = ("books_conflated", "dropped_books", "books_lost")


def books_until(sub: Subscriber, pred, timeout: float = 20.0) -> list:
    """Poll sub until pred(events so far) holds; every event seen."""
    events: list = []
    deadline = time.monotonic() + timeout
    while not pred(events):
        assert time.monotonic() < deadline, f"timed out; saw {[e.kind for e in events][-20:]}"
        events += sub.poll(0.2)
    return events


def _book_after_reconnect(kinds: list[str]) -> bool:
    return "reconnected" in kinds and "book" in kinds[kinds.index("reconnected") :]


# ----- the documented procedure against a live instance ---------------------------------------


def test_documented_procedure_50_times_sees_no_false_gap(redis_server, instance, tmp_path):
    sets = ["sim.rate=1000", "feeds.0.depth_stream=depth@0ms"]
    run = Running(
        instance, redis_server.url, tmp_path, extra=[a for s in sets for a in ("--set", s)]
    )
    run.start()
    try:
        run.wait_ready(60)
        r = redis.Redis.from_url(redis_server.url)
        wait_for(lambda: r.hlen(DIRECTORY_KEY) == 3, what=f"the directory; log:\n{run.log()}")
        false_gaps, real, books = 0, 0, 0
        for _ in range(50):
            before = counters(instance)
            with Subscriber(redis_server.url, LIVE_SYMBOLS) as sub:
                seen = books_until(
                    sub,
                    lambda ev: (
                        {e.symbol for e in ev if e.kind == "book" and not e.snapshot}
                        >= set(LIVE_SYMBOLS)
                    ),
                )
                books += sum(e.kind == "book" for e in seen)
                gaps = sum(e.missed for e in seen if e.kind == "gap")
                assert not any(e.kind == "reset" for e in seen)
            after = counters(instance)
            explained = sum(after[k] - before[k] for k in REAL_GAP_COUNTERS)
            if gaps > explained:
                false_gaps += 1
            real += gaps
        assert false_gaps == 0, f"{false_gaps} of 50 runs reported gaps the publisher never made"
        assert books > 50 * len(LIVE_SYMBOLS)
        # The example program follows the same procedure.
        out = subprocess.run(
            [sys.executable, "readers/redis_subscriber.py", "--url", redis_server.url,
             "--count", "30", "--timeout", "30", *LIVE_SYMBOLS],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1].startswith("received ")
        assert "GAP" not in out.stdout or counters(instance)["books_conflated"] > 0
    finally:
        if run.proc is not None and run.proc.poll() is None:
            run.stop()
        run.kill()


# ----- real gaps: conflation and an outage ----------------------------------------------------


def test_forced_conflation_is_reported_as_exactly_the_books_skipped(redis_server, instance):
    bw = book_writer(instance, capacity=1 << 14)
    cfg = make_cfg(instance, redis_server.url, "publisher.batch=8")
    with publisher(cfg, rings=1):
        put_book(bw, 0, 0)
        put_book(bw, 1, 0)
        wait_for(lambda: counters(instance).get("books_published") == 2)
        with Subscriber(redis_server.url, SYMBOLS) as sub:
            snaps = books_until(sub, lambda ev: sum(e.snapshot for e in ev) == 2)
            assert not any(e.kind == "gap" for e in snaps)
            for i in range(1, 3001):  # a burst far beyond a batch: conflated
                put_book(bw, i % 2, i)
            events = books_until(
                sub,
                lambda ev: (
                    {e.symbol for e in ev if e.kind == "book" and e.data["seq"] == 1501}
                    == set(SYMBOLS)
                ),
            )
        c = counters(instance)
    gaps = [e for e in events if e.kind == "gap"]
    assert c["books_conflated"] > 0 and gaps
    assert sum(e.missed for e in gaps) == c["books_conflated"] == sub.missed
    seqs = [e.data["seq"] for e in events if e.kind == "book" and e.symbol == "BTCUSDT"]
    assert seqs == sorted(seqs) and seqs[-1] == 1501


def test_a_redis_outage_is_reported_as_a_gap_and_the_subscriber_resyncs(redis_server, instance):
    bw = book_writer(instance, capacity=1 << 14)
    cfg = make_cfg(instance, redis_server.url, "publisher.reconnect_max=0.3")
    with publisher(cfg, rings=1):
        put_book(bw, 0, 0)
        wait_for(lambda: counters(instance).get("books_published") == 1)
        sub = Subscriber(redis_server.url, ["BTCUSDT"], reconnect_max=0.3)
        books_until(sub, lambda ev: any(e.snapshot for e in ev))
        redis_server.stop()
        for i in range(1, 11):
            put_book(bw, 0, i)  # dropped: Redis is gone
        wait_for(lambda: counters(instance).get("dropped_books") == 10)
        sub.poll(0.5)  # notices the loss
        redis_server.start()
        # One wait: the resynced book may come in the same poll as the reconnection.
        events = books_until(sub, lambda ev: _book_after_reconnect([e.kind for e in ev]))
        sub.close()
    gaps = [e for e in events if e.kind == "gap"]
    assert len(gaps) == 1 and gaps[0].missed == 9 and (gaps[0].seq_from, gaps[0].seq_to) == (1, 11)
    assert sub.reconnects == 1


# ----- Streams ------------------------------------------------------------------------------


def test_streams_consumer_away_5_s_resumes_with_every_trade(redis_server, instance):
    tw = trade_writer(instance, capacity=1 << 14)
    cfg = make_cfg(instance, redis_server.url, "publisher.streams=true")
    with publisher(cfg, rings=1):
        put_trade(tw, 0, 0)
        wait_for(lambda: counters(instance).get("stream_entries") == 1)
        reader = StreamReader(redis_server.url, ["BTCUSDT"])  # from the newest entry on
        got: list[int] = []
        for i in range(1, 101):
            put_trade(tw, 0, i)
        while len(got) < 100:
            got += [e.data["trade_id"] for e in reader.read(0.5) if e.kind == "entry"]
        saved = reader.positions
        reader.close()  # away: the trades go on
        t0 = time.monotonic()
        i = 101
        # 5 s and at least 1000 trades (a loaded machine writes fewer in 5 s).
        while time.monotonic() - t0 < 5.0 or i <= 1100:
            put_trade(tw, 0, i)
            i += 1
            time.sleep(0.002)
        reader = StreamReader(redis_server.url, ["BTCUSDT"], start=saved)
        events: list = []
        while not events or events[-1].data["trade_id"] != 1000 + i - 1:
            events += [e for e in reader.read(0.5)]
        reader.close()
    assert not any(e.kind != "entry" for e in events) and reader.missed == 0
    got += [e.data["trade_id"] for e in events]
    assert got == list(range(1001, 1000 + i))  # every trade, in order, once


def test_streams_consumer_beyond_maxlen_is_told_how_many_it_missed(redis_server, instance):
    tw = trade_writer(instance, capacity=1 << 14)
    cfg = make_cfg(
        instance, redis_server.url, "publisher.streams=true", "publisher.stream_maxlen=100"
    )
    with publisher(cfg, rings=1):
        put_trade(tw, 0, 0)
        wait_for(lambda: counters(instance).get("stream_entries") == 1)
        reader = StreamReader(redis_server.url, ["BTCUSDT"])
        saved = reader.positions
        reader.close()
        for i in range(1, 2001):
            put_trade(tw, 0, i)
        wait_for(lambda: counters(instance).get("stream_entries") == 2001)
        kept = redis.Redis.from_url(redis_server.url).xlen("trades_stream:BTCUSDT")
        reader = StreamReader(redis_server.url, ["BTCUSDT"], start=saved)
        events: list = []
        while not events or events[-1].data["trade_id"] != 3000:
            events += reader.read(0.5)
        reader.close()
    gap = events[0]
    entries = [e for e in events if e.kind == "entry"]
    assert 100 <= kept < 2000
    assert gap.kind == "gap" and gap.missed == 2000 - len(entries) == 2000 - kept
    assert [e.data["trade_id"] for e in entries] == list(range(3001 - kept, 3001))
    assert saved["BTCUSDT"] == Position(saved["BTCUSDT"].id, 1)


# ----- several venues -------------------------------------------------------------------------


def test_one_symbol_on_two_venues_never_shares_a_channel_or_key(redis_server, instance):
    binance = book_writer(instance)  # the config's only venue: plain names
    bybit = book_writer(instance, ring="books.bybit.0", exchange="bybit-linear")
    cfg = make_cfg(instance, redis_server.url, "publisher.streams=true")
    with publisher(cfg, rings=2):
        put_book(binance, 0, 1)
        put_book(bybit, 0, 2)
        r = redis.Redis.from_url(redis_server.url)
        names = ("orderbook:BTCUSDT", "orderbook:bybit-linear:BTCUSDT")
        # The directory lists a ring's names when it starts; its keys follow the first books.
        wait_for(lambda: r.hlen(DIRECTORY_KEY) == 4 and r.exists(*names) == 2)
        keys = {
            "binance": orjson.loads(r.get("orderbook:BTCUSDT")),
            "bybit": orjson.loads(r.get("orderbook:bybit-linear:BTCUSDT")),
        }
        with pytest.raises(ConsumerError, match="BTCUSDT is on several venues"):
            Subscriber(redis_server.url, ["BTCUSDT"])
        with Subscriber(
            redis_server.url, ["binance-futures:BTCUSDT", "bybit-linear:BTCUSDT"]
        ) as sub:
            books_until(sub, lambda ev: sum(e.snapshot for e in ev) == 2)
            put_book(bybit, 0, 3)
            put_book(binance, 0, 4)
            ev = books_until(sub, lambda ev: sum(e.kind == "book" for e in ev) == 2)
    assert keys["binance"]["exchange"] == EXCHANGE and keys["binance"]["first_update_id"] == 10
    assert keys["bybit"]["exchange"] == "bybit-linear" and keys["bybit"]["first_update_id"] == 20
    got = {(e.venue, e.data["exchange"], e.data["first_update_id"]) for e in ev}
    assert got == {("bybit-linear", "bybit-linear", 30), (EXCHANGE, EXCHANGE, 40)}
    names = {k.decode(): orjson.loads(v) for k, v in r.hgetall(DIRECTORY_KEY).items()}
    assert names["bybit-linear:BTCUSDT"]["trades_stream"] == "trades_stream:bybit-linear:BTCUSDT"
    assert names["binance-futures:BTCUSDT"]["trades"] == "trades:BTCUSDT"


def test_a_config_of_two_venues_puts_every_venue_in_the_names(redis_server, instance):
    spot = book_writer(instance, ring="books.spot.0", exchange="binance-spot")
    extra = ("feeds.0.name=usdm",)
    cfg = make_cfg(instance, redis_server.url, *extra)
    cfg.feeds.append(type(cfg.feeds[0])(name="spot", market="spot", symbols=["BTCUSDT"]))
    with publisher(cfg, rings=1):
        put_book(spot, 0, 1)
        r = redis.Redis.from_url(redis_server.url)
        wait_for(lambda: r.exists("orderbook:binance-spot:BTCUSDT"))
    assert not r.exists("orderbook:BTCUSDT")


# ----- bad input ----------------------------------------------------------------------------


def test_bad_input_is_one_clear_line(redis_server, instance):
    nowhere = f"redis://127.0.0.1:{refused_port()}/0"
    with pytest.raises(ConsumerError, match=f"cannot reach Redis at {nowhere}"):
        Subscriber(nowhere, ["BTCUSDT"])
    with pytest.raises(ConsumerError, match="no mdpipe publisher writes there"):
        StreamReader(redis_server.url, ["BTCUSDT"])
    bw = book_writer(instance)
    with publisher(make_cfg(instance, redis_server.url), rings=1):
        put_book(bw, 0, 1)
        wait_for(lambda: redis.Redis.from_url(redis_server.url).exists(DIRECTORY_KEY))
        with pytest.raises(
            ConsumerError, match="unknown symbol 'DOGEUSDT': .* carries binance-futures:BTCUSDT"
        ):
            Subscriber(redis_server.url, ["BTCUSDT", "DOGEUSDT"])
        for url, sym, want in (
            (nowhere, "BTCUSDT", "cannot reach Redis"),
            (redis_server.url, "NOPE", "unknown symbol 'NOPE'"),
        ):
            out = subprocess.run(
                [sys.executable, "readers/redis_subscriber.py", "--url", url, sym],
                cwd=REPO, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert out.returncode == 2 and want in out.stderr
            assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_a_subscriber_may_wait_for_a_publisher_starting_alongside(redis_server, instance):
    made: list = []
    t = threading.Thread(
        target=lambda: made.append(Subscriber(redis_server.url, ["ETHUSDT"], wait=60)), daemon=True
    )
    t.start()
    bw = book_writer(instance)
    with publisher(make_cfg(instance, redis_server.url), rings=1):
        put_book(bw, 1, 1)
        t.join(60)
        assert made, "the subscriber did not find ETHUSDT"
        with made[0] as sub:
            put_book(bw, 1, 2)
            ev = books_until(
                sub, lambda ev: any(e.kind == "book" and e.data["seq"] == 2 for e in ev)
            )
    assert not any(e.kind == "gap" for e in ev)


def test_books_stream_at_its_cadence(redis_server, instance):
    bw = book_writer(instance)
    cfg = make_cfg(
        instance, redis_server.url, "publisher.streams=true", "publisher.stream_book_interval=0.5"
    )
    with publisher(cfg, rings=1):
        reader = None
        put_book(bw, 0, 0)
        r = redis.Redis.from_url(redis_server.url)
        wait_for(lambda: r.xlen("orderbook_stream:BTCUSDT") == 1)
        reader = StreamReader(redis_server.url, ["BTCUSDT"], kind="books", from_oldest=True)
        t0 = time.monotonic()
        i = 1
        while time.monotonic() - t0 < 3.0:
            put_book(bw, 0, i)
            i += 1
            time.sleep(0.005)
        final = i - 1
        events: list = []
        while not events or events[-1].data["first_update_id"] != 10 * final:
            events += reader.read(0.5)
        span = time.monotonic() - t0  # as long as the publisher could have been streaming
        reader.close()
    seqs = [e.data["seq"] for e in events]
    assert seqs == sorted(seqs) and seqs[0] == 1 and seqs[-1] == final + 1
    # About one book per interval, the newest (of some 600 written).
    assert 3 <= len(events) <= span / 0.5 + 2, (len(events), span)
    assert np.all(np.diff([e.n for e in events]) == 1)


def test_stream_numbers_continue_across_a_publisher_restart(redis_server, instance):
    tw = trade_writer(instance, capacity=1 << 12)
    cfg = make_cfg(instance, redis_server.url, "publisher.streams=true")
    with publisher(cfg, rings=1):
        for i in range(10):
            put_trade(tw, 0, i)
        wait_for(lambda: counters(instance).get("stream_entries") == 10)
    reader = StreamReader(redis_server.url, ["BTCUSDT"], from_oldest=True)
    first = [e for e in reader.read(2.0)]
    for i in range(10, 20):  # written while no publisher runs: sent by the next one
        put_trade(tw, 0, i)
    with publisher(cfg, rings=1):
        wait_for(lambda: counters(instance).get("stream_entries") == 20)
        events: list = []
        while len(events) < 10:
            events += reader.read(0.5)
    reader.close()
    assert [e.n for e in first] == list(range(1, 11))
    assert [(e.kind, e.n, e.data["trade_id"]) for e in events] == [
        ("entry", n, 1000 + n - 1) for n in range(11, 21)
    ]
