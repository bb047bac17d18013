"""A few hundred USD-M symbols come up within the simulator's enforced limits: no 414, no
refused request or closed connection, REST weight within the minute's budget, no ban."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_ingest_support import IngestProcess, write_sim_config
from test_runtime_subscriptions import mdpipe, runtime_dir  # noqa: F401 - a fixture

from mdpipe.sim.instruments import universe
from mdpipe.sim.process import SimProcess
from mdpipe.venues.binance import limits

N = 250  # x weight 10 (snapshot limit 500) = 2,500: more than one minute's budget


@pytest.mark.usefixtures("runtime_dir")
def test_a_few_hundred_symbols_come_up_within_the_venues_limits(
    tmp_path: Path, instance: str
) -> None:
    symbols = universe(N)
    more = universe(N + 263)[N:]  # 526 more market streams: past 1,024 on that connection
    with SimProcess(["--universe", str(N + 263), "--levels", "100", "--rate", "1000"]) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market="futures",
            symbols=symbols,
            depth_stream="depth@100ms",
            trade_stream="aggTrade",
            snapshot_limit=500,
            stream_timeout=30.0,
        )
        with IngestProcess(cfg, instance) as ingest:
            ingest.wait_running()
            c = ingest.wait_for(
                "every book synced on both connections",
                lambda c: c["g_books_synced"] == N and c["g_connections"] == 2,
                timeout=240,
            )
            stats = sim.stats()
            # Subscribing past the venue's streams per connection is refused, changing nothing.
            r = mdpipe("subscribe", *more, "--instance", instance)
            assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
            assert r.stderr.startswith("mdpipe subscribe: venue limit reached: every market ")
            after = ingest.counters()
            assert after["g_books_total"] == N and after["g_books_synced"] == N
            assert ingest.stop() == 0
    # Two connections (public: 250 depth streams, market: 500 trade and mark streams),
    # each URL short enough, the rest subscribed by paced messages: nothing refused.
    assert stats["connections"]["opened"] == 2
    assert stats["connections"]["closed"] == {}
    assert stats["rest"]["by_status"] == {"200": N}
    weight = stats["rest_weight"]
    assert weight["refused_429"] == 0 and weight["refused_418"] == 0
    assert weight["peak"] <= limits.WEIGHT_LIMIT["futures"]
    assert c["rest_429"] == 0 and c["rest_418"] == 0 and c["snapshot_errors"] == 0
    assert c["reconnects"] == 0 and c["stream_faults"] == 0 and c["parse_errors"] == 0
    assert c["resyncs"] == 0
    # The budget paced the snapshots: it waited for the next minute, and knew the weight used.
    assert c["rest_paced_ms"] > 0 and 0 < c["g_rest_weight"] <= limits.WEIGHT_LIMIT["futures"]
