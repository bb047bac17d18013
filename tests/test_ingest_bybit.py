"""Bybit end to end: the Bybit simulator (linear, then spot) into one real ingest process,
every fault.

Ground truth is the simulator's own `orderbook.1` topic, collected by a separate client:
whenever a book record's last update id (Bybit's `seq`) equals an `orderbook.1` message's
`seq`, its best bid and ask must equal that message's. Trades are checked against the
`publicTrade` messages the same client saw: each once, in order, none invented.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from test_ingest_support import (
    ReconnectingCollector,
    Ticker,
    VenueRig,
    check_record_invariants,
    compare_with_tickers,
    venue_rig,
)

from mdpipe.shm import layout as L
from mdpipe.venues.base import BookTicker, Trades
from mdpipe.venues.bybit.wire import BybitParser

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


class TopCollector(ReconnectingCollector):
    """orderbook.1 (seq -> top) and publicTrade ids, from the simulator, reconnecting on faults."""

    what = "orderbook.1"

    def __init__(self, ws_url: str, market: str = "linear") -> None:
        super().__init__(f"{ws_url}/v5/public/{market}")
        self.market = market
        self.tickers: dict[tuple[str, int], Ticker] = {}
        self.trade_ids: dict[str, set[int]] = {s: set() for s in SYMBOLS}

    def subscribe(self) -> bytes:
        args = [f"orderbook.1.{s}" for s in SYMBOLS] + [f"publicTrade.{s}" for s in SYMBOLS]
        return orjson.dumps({"op": "subscribe", "req_id": "gt", "args": args})

    def parser(self) -> BybitParser:
        return BybitParser(self.market)  # trade numbering restarts with the stream

    def take(self, event: Any) -> None:
        if isinstance(event, BookTicker):
            top = (event.bid_price, event.bid_qty, event.ask_price, event.ask_qty)
            self.tickers[(event.symbol, event.update_id)] = top
        elif isinstance(event, Trades):
            for t in event.trades:
                self.trade_ids[t.symbol].add(t.trade_id)


@pytest.fixture(scope="module", params=["linear", "spot"])
def rig(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VenueRig]:
    market = request.param
    args = ["--venue", "bybit", "--market", market, "--symbols", ",".join(SYMBOLS),
            "--rate", "400", "--start-clients", "2"]  # fmt: skip
    yield from venue_rig(
        tmp_path_factory.mktemp(f"ingest-bybit-{market}"),
        args,
        lambda ws_url: TopCollector(ws_url, market).start(),
        market,
        SYMBOLS,
        exchange="bybit",
        depth_stream="orderbook.50",
        trade_stream="publicTrade",
        silence_timeout=1.0,
        stream_timeout=3.0,
        reconnect_max=0.5,
    )


def test_the_segment_names_the_venue_and_the_books_sync_from_the_stream(rig: VenueRig) -> None:
    from mdpipe.shm.segment import read_status

    exchange = read_status(rig.ingest.instance, rig.ingest.books_ring).exchange
    assert exchange == f"bybit-{rig.truth.market}"
    c = rig.counters()
    assert c["snapshots"] >= 2 and c["snapshot_errors"] == 0 and c["parse_errors"] == 0
    assert c["stream_faults"] == 0 and c["g_connections_expected"] == 1


def _rebuilt(rig: VenueRig, fault: str, more: dict[str, int], **fields: object) -> dict[str, int]:
    base = rig.counters()
    mark = len(rig.books.drain())
    rig.sim.inject(fault, **fields)
    after = rig.wait_synced(f"the rebuild after {fault}", more, base)
    recs = rig.books.drain()[mark:]
    rebuilt = recs[(recs["flags"] & L.FLAG_RESYNC) != 0]
    assert len(rebuilt), f"{fault}: no record flagged as a rebuild"
    return after


def test_gap_resubscribes_and_rebuilds(rig: VenueRig) -> None:
    _rebuilt(rig, "gap", {"gaps": 1, "resyncs": 1}, symbol="BTCUSDT")
    assert "asking" in rig.ingest.log()


def test_mid_stream_snapshot_and_restart_rebuild_the_book(rig: VenueRig) -> None:
    _rebuilt(rig, "snapshot", {"snapshot_resets": 2, "resyncs": 2})
    _rebuilt(
        rig,
        "restart",
        {"snapshot_resets": 2, "resyncs": 2},
    )


@pytest.mark.parametrize("variant", ["abrupt", "close"])
def test_disconnect_reconnects_and_rebuilds(rig: VenueRig, variant: str) -> None:
    _rebuilt(rig, "disconnect", {"reconnects": 1, "resyncs": 2}, variant=variant)


def test_shutdown_and_silence_reconnect(rig: VenueRig) -> None:
    _rebuilt(rig, "shutdown", {"reconnects": 1}, seconds=0.2)
    _rebuilt(rig, "silence", {"silences": 1, "reconnects": 1}, seconds=2.0)


def test_malformed_messages_are_counted_and_kept_without_breaking_the_book(rig: VenueRig) -> None:
    base = rig.counters()
    rig.sim.inject("malformed", symbol="ETHUSDT")
    # dead_lettered grows once a frame is in the file (parse_errors before it is written).
    after = rig.ingest.wait_for(
        "7 bad frames counted and kept",
        lambda c: (
            c["parse_errors"] >= base["parse_errors"] + 7
            and c["dead_lettered"] >= base["dead_lettered"] + 7
        ),
    )
    assert after["gaps"] == base["gaps"]  # bad frames claimed the next u and were refused
    kinds = {orjson.loads(line)["kind"] for line in rig.dead_letter.read_bytes().splitlines()}
    assert {"malformed_json", "bad_number", "missing_field", "bad_type"} <= kinds


def test_every_exact_record_equals_orderbook_1_and_trades_come_once_in_order(rig: VenueRig) -> None:
    deadline = time.monotonic() + 30
    compared = 0
    while compared < 100 and time.monotonic() < deadline:
        records = rig.books.drain()
        compared, wrong = compare_with_tickers(records, SYMBOLS, rig.truth.tickers)
        assert not wrong, wrong[:5]
        time.sleep(0.1)
    assert compared >= 100, f"only {compared} records matched an orderbook.1 seq"
    check_record_invariants(records, 20)
    # Continuity: a synced record continues the previous one (u + 1, prev = its seq) or is
    # flagged as a rebuild.
    last: dict[int, tuple[int, int]] = {}
    for rec in records:
        sid, flags = int(rec["symbol_id"]), int(rec["flags"])
        u, seq, prev = (int(rec["first_update_id"]), int(rec["last_update_id"]),
                        int(rec["prev_update_id"]))  # fmt: skip
        if not flags & L.FLAG_SYNCED:
            last.pop(sid, None)
        elif flags & L.FLAG_RESYNC or (rec["bid_count"] and sid not in last):
            last[sid] = (u, seq)
        else:
            assert last[sid] == (u - 1, prev), f"symbol {sid}: u={u} prev={prev} after {last[sid]}"
            last[sid] = (u, seq)
    trades = rig.trades.drain()
    assert len(trades) > 100
    for sid, sym in enumerate(SYMBOLS):
        ids = trades[trades["symbol_id"] == sid]["trade_id"].astype(np.int64)
        assert (np.diff(ids) > 0).all(), f"{sym}: a trade repeated or out of order"
        # The collector is cut by the disconnect faults too, at slightly other moments.
        seen = rig.truth.trade_ids[sym]
        unseen = set(ids.tolist()) - seen
        assert len(unseen) <= len(ids) // 20, f"{sym}: {len(unseen)} trades the collector never saw"
