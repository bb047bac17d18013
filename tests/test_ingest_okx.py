"""OKX through the real ingest: the simulator (`--venue okx`) and one ingest process.

Ground truth is the simulator's own `bbo-tbt`, read by a separate client: every record
flagged exact whose seqId a `bbo-tbt` carries must show that best bid and ask. Every fault
kind gives a counted, flagged rebuild; trades arrive once each, in tradeId order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from conftest import remove_segments, unique_instance
from test_ingest_support import (
    IngestProcess,
    ReconnectingCollector,
    RecordLog,
    VenueRig,
    check_record_invariants,
    compare_with_tickers,
    venue_rig,
    write_sim_config,
)

from mdpipe.shm import layout as L
from mdpipe.shm.segment import read_status
from mdpipe.sim.process import SimProcess
from mdpipe.venues.base import BookTicker
from mdpipe.venues.okx.parser import OkxParser

SYMBOLS = ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]
BTC, ETH = 0, 1
Top = tuple[float, float, float, float]


class BboCollector(ReconnectingCollector):
    """The simulator's `bbo-tbt` per (instId, seqId), on its own connection (reconnects)."""

    what = "bbo-tbt"
    ping_every = 5.0

    def __init__(self, ws_url: str, symbols: list[str]) -> None:
        super().__init__(f"{ws_url}/ws/v5/public")
        args = [{"channel": "bbo-tbt", "instId": s} for s in symbols]
        self._subscribe = orjson.dumps({"id": "t1", "op": "subscribe", "args": args}).decode()
        self.tops: dict[tuple[str, int], Top] = {}
        self._parser = OkxParser()

    def subscribe(self) -> str:
        return self._subscribe

    def parser(self) -> OkxParser:
        return self._parser

    def take(self, event: Any) -> None:
        if isinstance(event, BookTicker):
            top = (event.bid_price, event.bid_qty, event.ask_price, event.ask_qty)
            self.tops[(event.symbol, event.update_id)] = top


def compare_with_bbo(
    records: np.ndarray, symbols: list[str], tops: dict[tuple[str, int], Top]
) -> tuple[int, list[str]]:
    """(exact records whose seqId a bbo-tbt carries, those whose top differs from it)."""
    return compare_with_tickers(records, symbols, tops, id_name="seqId", truth="bbo")


def check_chain(records: np.ndarray) -> int:
    """Every exact record continues the previous one's seqId (prev_update_id) or is flagged
    RESYNC; returns the number of rebuilds."""
    last: dict[int, int] = {}
    rebuilds = 0
    for rec in records:
        sid, flags = int(rec["symbol_id"]), int(rec["flags"])
        seq, prev = int(rec["last_update_id"]), int(rec["prev_update_id"])
        if not flags & L.FLAG_SYNCED:
            last.pop(sid, None)
            continue
        if flags & L.FLAG_RESYNC:
            rebuilds += 1
        elif seq and prev and last.get(sid):  # seqId-less legacy messages: proven by checksum
            assert last.get(sid) == prev, f"symbol {sid}: prevSeqId={prev} after {last.get(sid)}"
        last[sid] = seq
    return rebuilds


def check_trades(trades: np.ndarray, n_symbols: int, contiguous: bool) -> None:
    """Each trade once, in order: per symbol every push starts after the previous one's last
    fill; `contiguous`: right after it (nothing lost; a reconnect may lose trades)."""
    for sid in range(n_symbols):
        t = trades[trades["symbol_id"] == sid]
        assert len(t), f"no trades for symbol {sid}"
        first = t["first_trade_id"].astype(np.int64)
        last = t["last_trade_id"].astype(np.int64)
        assert (first <= last).all()
        assert (first[1:] > last[:-1]).all(), "a trade repeated or out of order"
        if contiguous:
            assert (first[1:] == last[:-1] + 1).all(), "a trade lost"


def make_rig(tmp: Path, sim_args: list[str], **feed: object) -> Iterator[VenueRig]:
    args = ["--venue", "okx", "--symbols", ",".join(SYMBOLS), "--rate", "400", *sim_args]
    yield from venue_rig(
        tmp,
        args,
        lambda ws_url: BboCollector(ws_url, SYMBOLS).start(),
        "swap",
        SYMBOLS,
        exchange="okx",
        depth_stream="books",
        trade_stream="trades",
        snapshot_limit=400,
        silence_timeout=1.5,
        stream_timeout=3.0,
        reconnect_max=0.5,
        **feed,
    )


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VenueRig]:
    """Current OKX data (checksum 0), books from the in-band snapshot, 20 ms pushes."""
    yield from make_rig(tmp_path_factory.mktemp("okx"), ["--okx-books-ms", "20"])


def test_syncs_from_the_in_band_snapshot(rig: VenueRig) -> None:
    c = rig.wait_synced("steady state", {"book_records": 50, "trades": 10})
    assert c["g_books_total"] == 2 and c["snapshots"] >= 2 and c["resyncs"] == 0
    assert rig.books.reader.top("BTC-USDT-SWAP") is not None
    stats = rig.sim.stats()
    assert stats["venue"] == "okx" and stats["requests"]["subscribe"] >= 2
    assert stats["requests"].get("pings", 0) >= 0


def test_gap_resubscribes_only_that_book(rig: VenueRig) -> None:
    c0 = rig.wait_synced("steady state")
    mark = len(rig.books.drain())
    rig.sim.inject("gap", symbol="ETH-USDT-SWAP")
    c = rig.wait_synced("the rebuild", {"gaps": 1, "resyncs": 1, "snapshots": 1}, c0)
    eth = rig.records_since(mark, ETH)["flags"]
    btc = rig.records_since(mark, BTC)["flags"]
    assert (eth == 0).sum() == 1 and ((eth & L.FLAG_RESYNC) != 0).sum() == 1
    assert len(btc) and (btc & L.FLAG_SYNCED).all() and not (btc & L.FLAG_RESYNC).any()
    assert c["reconnects"] == c0["reconnects"]  # a resubscribe, not a reconnect
    assert rig.sim.stats()["requests"]["unsubscribe"] >= 1


@pytest.mark.parametrize("variant", ["abrupt", "close"])
def test_disconnect_rebuilds_every_book(rig: VenueRig, variant: str) -> None:
    c0 = rig.wait_synced("steady state")
    mark = len(rig.books.drain())
    assert rig.sim.inject("disconnect", variant=variant)["connections"] >= 1
    rig.wait_synced("the rebuild", {"reconnects": 1, "resyncs": 2, "snapshots": 2}, c0)
    for sid in (BTC, ETH):
        flags = rig.records_since(mark, sid)["flags"]
        assert (flags == 0).sum() >= 1 and (flags & L.FLAG_RESYNC).any()


def test_malformed_frames_are_counted_and_skipped(rig: VenueRig) -> None:
    c0 = rig.wait_synced("steady state")
    mark = len(rig.books.drain())
    assert len(rig.sim.inject("malformed")["variants"]) == 7
    c = rig.wait_synced("the bad frames", {"parse_errors": 7, "dead_lettered": 7}, c0)
    assert c["dead_lettered"] - c0["dead_lettered"] == c["parse_errors"] - c0["parse_errors"]
    assert c["gaps"] == c0["gaps"] and c["resyncs"] == c0["resyncs"]
    for sid in (BTC, ETH):
        assert (rig.records_since(mark, sid)["flags"] & L.FLAG_SYNCED).all()


def test_silence_is_detected_and_the_books_rebuilt(rig: VenueRig) -> None:
    c0 = rig.wait_synced("steady state")
    rig.sim.inject("silence", seconds=3.0)
    rig.wait_synced("after the silence", {"silences": 1, "reconnects": 1, "resyncs": 2}, c0)
    assert "(silent feed)" in rig.ingest.log()


def test_upgrade_notice_hands_over_make_before_break(rig: VenueRig) -> None:
    """OKX's 64008 notice: a new connection first, the old one closed after; no book stale."""
    c0 = rig.wait_synced("steady state")
    mark, trade_mark = len(rig.books.drain()), len(rig.trades.drain())
    rig.sim.inject("shutdown", seconds=1.0)
    more = {"server_shutdowns": 1, "rollovers": 1, "trades": 20, "book_records": 20}
    c = rig.wait_synced("the handover and trades after it", more, c0)
    for name in ("gaps", "reconnects"):
        assert c[name] == c0[name], (name, c0, c)
    for sid in (BTC, ETH):
        assert (rig.records_since(mark, sid)["flags"] & L.FLAG_SYNCED).all()
    check_trades(rig.trades.drain()[trade_mark:], 2, contiguous=True)


def test_no_exact_record_disagrees_with_bbo_tbt_and_trades_come_once_in_order(
    rig: VenueRig,
) -> None:
    rig.wait_synced("more records to compare", {"book_records": 400}, rig.counters())
    records = rig.books.drain()
    check_record_invariants(records, depth=20)
    assert check_chain(records) >= 2 + 1 + 2 * 2 + 2
    comparable, wrong = compare_with_bbo(records, SYMBOLS, rig.truth.tops)
    assert not wrong, f"{len(wrong)} of {comparable} records disagree: {wrong[:5]}"
    assert comparable >= 100
    trades = rig.trades.drain()
    check_trades(trades, 2, contiguous=False)
    side = trades["side"].astype(int)
    maker = (trades["flags"] & L.FLAG_BUYER_MAKER) != 0
    assert ((side == -1) == maker).all() and set(np.unique(side)) == {-1, 1}


@pytest.fixture(scope="module")
def rest_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VenueRig]:
    """No in-band snapshot (OKX's announced change): books start from REST + buffered updates."""
    yield from make_rig(
        tmp_path_factory.mktemp("okx-rest"),
        ["--okx-books-ms", "20", "--okx-no-snapshot"],
        book_start="rest",
    )


def test_rest_start_syncs_without_an_in_band_snapshot(rest_rig: VenueRig) -> None:
    c = rest_rig.wait_synced("steady state", {"book_records": 50})
    assert c["snapshots"] >= 2 and c["snapshot_errors"] == 0
    assert rest_rig.sim.stats()["rest_by_status"]["200"] >= 2


@pytest.mark.parametrize(
    ("fault", "fields", "counter", "n"),
    [
        ("rest_500", {"count": 2}, "rest_5xx", 2),
        ("rest_429", {"count": 1, "retry_after": 1}, "rest_429", 1),
        ("rest_slow", {"count": 1, "delay": 1.0}, "snapshots", 1),
    ],
)
def test_rest_faults_delay_the_rebuild_but_never_publish_a_wrong_book(
    rest_rig: VenueRig, fault: str, fields: dict, counter: str, n: int
) -> None:
    c0 = rest_rig.wait_synced("steady state")
    mark = len(rest_rig.books.drain())
    rest_rig.sim.inject(fault, **fields)
    rest_rig.sim.inject("gap", symbol="ETH-USDT-SWAP")  # forces a REST resync
    more = {counter: n, "gaps": 1, "snapshots": 1}
    if fault != "rest_slow":
        more["snapshot_errors"] = n
    rest_rig.wait_synced(f"the rebuild through {fault}", more, c0)
    eth = rest_rig.records_since(mark, ETH)["flags"]
    assert (eth == 0).sum() == 1 and ((eth & L.FLAG_RESYNC) != 0).sum() == 1


def test_rest_started_books_agree_with_bbo_tbt(rest_rig: VenueRig) -> None:
    rest_rig.wait_synced("more records", {"book_records": 400}, rest_rig.counters())
    records = rest_rig.books.drain()
    check_record_invariants(records, depth=20)
    check_chain(records)
    comparable, wrong = compare_with_bbo(records, SYMBOLS, rest_rig.truth.tops)
    assert not wrong, f"{len(wrong)} of {comparable} records disagree: {wrong[:5]}"
    assert comparable >= 30
    check_trades(rest_rig.trades.drain(), 2, contiguous=False)


@pytest.fixture(scope="module")
def legacy_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VenueRig]:
    """Data as recorded before 2026: non-zero checksums, some updates without seqId."""
    yield from make_rig(
        tmp_path_factory.mktemp("okx-legacy"), ["--okx-books-ms", "20", "--okx-legacy"]
    )


def test_legacy_checksums_verified_and_gaps_still_caught(legacy_rig: VenueRig) -> None:
    c0 = legacy_rig.wait_synced("steady state", {"book_records": 200})
    assert legacy_rig.sim.stats()["source"]["pushes_without_seq_id"] > 0
    assert c0["gaps"] == 0 and c0["resyncs"] == 0  # every checksum held
    mark = len(legacy_rig.books.drain())
    legacy_rig.sim.inject("gap", symbol="BTC-USDT-SWAP")
    legacy_rig.wait_synced("the rebuild", {"gaps": 1, "snapshots": 1}, c0)
    btc = legacy_rig.records_since(mark, BTC)["flags"]
    assert (btc == 0).sum() == 1 and ((btc & L.FLAG_RESYNC) != 0).sum() == 1
    legacy_rig.wait_synced("more records", {"book_records": 300}, legacy_rig.counters())
    records = legacy_rig.books.drain()
    check_record_invariants(records, depth=20)
    check_chain(records)
    comparable, wrong = compare_with_bbo(records, SYMBOLS, legacy_rig.truth.tops)
    assert not wrong, f"{len(wrong)} of {comparable} records disagree: {wrong[:5]}"
    assert comparable >= 30


def test_a_refused_instrument_is_reported_and_the_others_sync(tmp_path: Path) -> None:
    """An instId the venue does not serve gets 60018 for its own subscribe message only."""
    instance = unique_instance()
    with SimProcess(["--venue", "okx", "--symbols", SYMBOLS[0], "--rate", "200"]) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market="swap",
            symbols=[SYMBOLS[0], "SOL-USDT-SWAP"],
            exchange="okx",
            depth_stream="books",
            trade_stream="trades",
            snapshot_limit=400,
        )
        try:
            with IngestProcess(cfg, instance) as ingest:
                c = ingest.wait_for(
                    "one book synced and the refusal counted",
                    lambda c: c["g_books_synced"] == 1 and c["stream_faults"] >= 1,
                    30,
                )
                assert c["g_books_total"] == 2
                log = ingest.log()
                assert "OKX 60018: the channel or instId does not exist" in log
                assert "SOL-USDT-SWAP" in log
                assert ingest.stop() == 0
        finally:
            remove_segments(instance)


def test_spot_books_sync_and_agree_with_bbo_tbt(tmp_path: Path) -> None:
    spot = ["BTC-USDT", "ETH-USDT"]
    instance = unique_instance()
    args = ["--venue", "okx", "--market", "spot", "--symbols", ",".join(spot)]
    with SimProcess([*args, "--rate", "400", "--okx-books-ms", "20"]) as sim:
        bbo = BboCollector(sim.ws_url, spot).start()
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market="spot",
            symbols=spot,
            exchange="okx",
            depth_stream="books",
            trade_stream="trades",
            snapshot_limit=400,
        )
        try:
            with IngestProcess(cfg, instance) as ingest:
                books = RecordLog(instance, ingest.books_ring, "book")
                ingest.wait_for(
                    "both spot books synced and 300 records",
                    lambda c: c["g_books_synced"] == 2 and len(books.drain()) >= 300,
                    30,
                )
                assert read_status(instance, ingest.books_ring).exchange == "okx-spot"
                records = books.drain()
                check_record_invariants(records, depth=20)
                comparable, wrong = compare_with_bbo(records, spot, bbo.tops)
                assert not wrong and comparable >= 10, (comparable, wrong[:3])
                books.close()
                assert ingest.stop() == 0
        finally:
            bbo.stop()
            remove_segments(instance)
