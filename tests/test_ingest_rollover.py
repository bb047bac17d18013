"""Make-before-break rollover: a connection replaced before the exchange cuts it loses nothing.

The simulator cuts every connection at a fixed age, as Binance does at 24 hours; the ingest
process replaces each connection earlier (`rollover_after`). Across several rollovers no book
is ever unsynced or rebuilt, every book record continues the previous one, every trade id
arrives exactly once and in order, and synced books equal the exchange's own bookTicker.
A serverShutdown event takes the same path (tests/test_ingest_faults.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import remove_segments, unique_instance
from test_ingest_support import (
    IngestProcess,
    RecordLog,
    TickerCollector,
    check_continuity,
    check_record_invariants,
    compare_with_tickers,
    write_sim_config,
)

from mdpipe.shm import layout as L
from mdpipe.sim.process import SimProcess

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
ROLLOVER_AFTER = 1.5  # the ingest replaces each connection at this age...
CUT_AT = "4s"  # ...before the simulator cuts it at this one


def check_trades_exactly_once(trades: np.ndarray) -> int:
    """Per symbol, trade ids go up by exactly one (the simulator's are consecutive)."""
    for sid in np.unique(trades["symbol_id"]):
        ids = trades["trade_id"][trades["symbol_id"] == sid].astype(np.int64)
        steps = np.diff(ids)
        assert (steps == 1).all(), f"symbol {sid}: trade id steps {sorted(set(steps.tolist()))}"
    return len(trades)


def start_ingest(
    tmp: Path, sim: SimProcess, market: str, symbols: list[str], **feed: float
) -> IngestProcess:
    """An ingest process of a fresh instance on the simulator (remove_segments when done)."""
    instance = unique_instance()
    cfg = write_sim_config(
        tmp,
        instance,
        sim,
        market=market,
        symbols=symbols,
        book_capacity=1 << 17,
        **feed,
    )
    return IngestProcess(cfg, instance).start()


@pytest.mark.parametrize("market", ["futures", "spot"])
def test_rollovers_lose_nothing_and_never_resync(tmp_path: Path, market: str) -> None:
    sim_args = ["--market", market, "--symbols", ",".join(SYMBOLS), "--rate", "1000"]
    with SimProcess([*sim_args, "--max-connection-age", CUT_AT]) as sim:
        tickers = TickerCollector(sim.ws_url, SYMBOLS, market).start()
        routes = 2 if market == "futures" else 1
        ingest = start_ingest(tmp_path, sim, market, SYMBOLS, rollover_after=ROLLOVER_AFTER)
        instance = ingest.instance
        try:
            c0 = ingest.wait_for("the first sync", lambda c: c["g_books_synced"] == 2)
            books = RecordLog(instance, ingest.books_ring, "book")
            trades = RecordLog(instance, ingest.trades_ring, "trade")
            gauges: set[tuple[int, int]] = set()

            def rolled(c: dict[str, int]) -> bool:
                books.drain()
                trades.drain()
                gauges.add((c["g_books_synced"], c["g_connections"]))
                return c["rollovers"] >= c0["rollovers"] + 3 * routes

            c = ingest.wait_for("three rollovers per connection", rolled, timeout=30)
            for name in ("resyncs", "gaps", "reconnects", "rollover_timeouts", "snapshots"):
                assert c[name] == c0[name], (name, c0, c, ingest.log()[-3000:])
            assert c["duplicates"] > 0  # both sockets delivered during each overlap
            assert gauges == {(2, routes)}, "a book or a connection went down during a rollover"
            assert "nothing lost" in ingest.log()

            recs = books.drain()
            check_record_invariants(recs, depth=20)
            # The only rebuilds are each book's first build.
            assert check_continuity(recs, futures=market == "futures") == len(SYMBOLS)
            assert (recs["flags"] & L.FLAG_SYNCED).all(), "a record said the book was not exact"
            seqs = recs["symbol_seq"].astype(np.int64)
            for sid in (0, 1):
                assert (np.diff(seqs[recs["symbol_id"] == sid]) == 1).all()
            comparable, wrong = compare_with_tickers(recs, SYMBOLS, tickers.tickers)
            assert not wrong, wrong[:5]
            assert comparable > 20
            assert check_trades_exactly_once(trades.drain()) > 100
            books.close()
            trades.close()
            assert ingest.stop() == 0, ingest.log()[-4000:]
        finally:
            ingest.__exit__()
            tickers.stop()
            remove_segments(instance)


def test_shutdown_with_an_immediate_cut_recovers_exactly(tmp_path: Path) -> None:
    """serverShutdown and the cut at once: whichever socket wins the race, books end synced and
    no record is wrong (the old socket dying before its replacement is up means a resync)."""
    with SimProcess(["--market", "spot", "--symbols", "BTCUSDT", "--rate", "500"]) as sim:
        ingest = start_ingest(tmp_path, sim, "spot", ["BTCUSDT"])
        instance = ingest.instance
        try:
            c0 = ingest.wait_for("the first sync", lambda c: c["g_books_synced"] == 1)
            books = RecordLog(instance, ingest.books_ring, "book")
            c = c0
            for _ in range(3):
                sim.inject("shutdown", seconds=0.0)
                # Whichever way it went, it ends counted once, with the book synced again.
                c = ingest.wait_for(
                    "recovery",
                    lambda now, before=c: (
                        now["g_books_synced"] == 1
                        and now["g_connections"] == 1
                        and now["rollovers"] + now["rollover_timeouts"] + now["reconnects"]
                        == before["rollovers"]
                        + before["rollover_timeouts"]
                        + before["reconnects"]
                        + 1
                    ),
                )
            assert c["server_shutdowns"] == c0.get("server_shutdowns", 0) + 3
            recs = books.drain()
            check_record_invariants(recs, depth=20)
            check_continuity(recs, futures=False)
            books.close()
            assert ingest.stop() == 0, ingest.log()[-4000:]
        finally:
            ingest.__exit__()
            remove_segments(instance)


def test_a_silent_feed_during_rollovers_still_unsyncs_the_books(tmp_path: Path) -> None:
    """Whether the silence finds a route with one socket or two, books stop claiming to be
    exact within the silence timeout, and resync when the exchange speaks again."""
    with SimProcess(["--market", "futures", "--symbols", "BTCUSDT", "--rate", "500"]) as sim:
        ingest = start_ingest(
            tmp_path, sim, "futures", ["BTCUSDT"], silence_timeout=1.0, rollover_after=0.7
        )
        instance = ingest.instance
        try:
            c0 = ingest.wait_for("the first sync", lambda c: c["g_books_synced"] == 1)
            for phase in (0.0, 0.4, 0.8):
                c0 = ingest.wait_for(
                    "a rollover, synced",
                    lambda c, n=c0["rollovers"]: c["rollovers"] > n and c["g_books_synced"] == 1,
                )
                time.sleep(phase)
                sim.inject("silence", seconds=3.0)
                # About silence_timeout (1.1 s measured); a route that rolled over instead of
                # noticing the silence would keep the book "synced" for good.
                ingest.wait_for("the book unsynced", lambda c: c["g_books_synced"] == 0, 2.5)
                ingest.wait_for(
                    "the resync",
                    lambda c, n=c0["resyncs"]: c["g_books_synced"] == 1 and c["resyncs"] > n,
                    timeout=15,
                )
            assert ingest.stop() == 0, ingest.log()[-4000:]
        finally:
            ingest.__exit__()
            remove_segments(instance)
