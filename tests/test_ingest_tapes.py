"""Recorded Binance tapes replayed by the simulator through a real ingest process.

The tapes carry the exchange's own bookTicker (best bid/ask tagged with the book's update
id): every book record whose last update id equals a bookTicker's `u` must show exactly that
best bid and ask. Without a usable snapshot (451, none at all) nothing may be flagged SYNCED.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import orjson
import pytest
from test_ingest_support import (
    IngestProcess,
    RecordLog,
    TlsProxy,
    check_continuity,
    check_record_invariants,
    compare_with_tickers,
    self_signed_cert,
    tape_book_tickers,
    write_config,
    write_sim_config,
)

from mdpipe.shm import layout as L
from mdpipe.sim.process import SimProcess

FUTURES_TAPE = "usdm_btcusdt_20240808.gz"
SPOT_TAPE = "spot_btcusdt_20240808.gz"


def tape_events(path: Path) -> tuple[int, list[dict]]:
    """(depth diffs, trades in order) of a tape."""
    diffs, trades = 0, []
    with gzip.open(path, "rb") as f:
        for line in f:
            head = line[:80]
            if b"@depth" in head:
                diffs += 1
            elif b"@trade" in head:
                trades.append(orjson.loads(line.partition(b" ")[2])["data"])
    return diffs, trades


def replay(tmp_path: Path, instance: str, tape: Path, market: str, sim_args: list[str]):
    """Run the whole tape through ingest; returns (counters, book records, trade records)."""
    diffs, trades = tape_events(tape)
    clients = ["--start-clients", "2"] if market == "futures" else []
    with SimProcess(["--tape", str(tape), *clients, *sim_args]) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market=market,
            symbols=["BTCUSDT"],
        )
        with IngestProcess(cfg, instance) as ingest:
            books = RecordLog(instance, ingest.books_ring, "book")
            trade_log = RecordLog(instance, ingest.trades_ring, "trade")

            def all_in(c: dict[str, int]) -> bool:
                books.drain()
                trade_log.drain()
                return c["depth_diffs"] == diffs and c["trades"] == len(trades)

            counters = ingest.wait_for("the whole tape", all_in, timeout=60)
            assert sim.stats()["source"]["finished"]
            assert ingest.stop() == 0
            counters = ingest.counters()
            return counters, books.drain(), trade_log.drain(), trades


@pytest.mark.parametrize("pace", ["--max", "--speed=100"])
@pytest.mark.parametrize(("name", "market"), [(FUTURES_TAPE, "futures"), (SPOT_TAPE, "spot")])
def test_every_synced_record_matches_the_exchange_book_ticker(
    tmp_path: Path, instance: str, tapes: Path, name: str, market: str, pace: str
) -> None:
    tape = tapes / name
    counters, records, trade_records, trades = replay(
        tmp_path, instance, tape, market, pace.split("=")
    )
    assert counters["parse_errors"] == 0 and counters["gaps"] == 0
    assert counters["snapshots"] >= 1
    check_record_invariants(records, depth=20)
    assert check_continuity(records, futures=market == "futures") == 1
    synced = records[(records["flags"] & L.FLAG_SYNCED) != 0]
    if pace != "--max":
        assert len(synced) > 0.95 * counters["depth_diffs"]
    comparable, wrong = compare_with_tickers(records, ["BTCUSDT"], tape_book_tickers(tape))
    assert not wrong, f"{len(wrong)} of {comparable} records disagree: {wrong[:5]}"
    # Paced, the replay never runs ahead of the snapshot: nearly every pair is compared
    # (futures 629, spot 564 on the tapes). Unpaced, the simulator answers REST from where
    # its replay is, up to several MB of socket buffers ahead of what ingest has read; the
    # diffs before that snapshot cannot be exact, so fewer pairs remain (98..620 seen).
    assert comparable >= (550 if pace != "--max" else 20)
    # Trades: every one, in order, with the aggressor's side.
    assert len(trade_records) == len(trades)
    assert (trade_records["trade_id"] == np.array([t["t"] for t in trades], np.uint64)).all()
    maker = np.array([t["m"] for t in trades])
    assert (trade_records["side"] == np.where(maker, -1, 1)).all()
    assert (((trade_records["flags"] & L.FLAG_BUYER_MAKER) != 0) == maker).all()
    assert (trade_records["price"] == np.array([float(t["p"]) for t in trades])).all()
    assert (trade_records["exchange_ts_ns"] == np.array([t["T"] for t in trades]) * 1_000_000).all()
    # Book records carry the exchange's update ids and event time.
    first = synced[0]
    assert first["flags"] & L.FLAG_RESYNC and first["exchange_ts_ns"] > 1.7e18
    assert (synced["recv_ts_ns"] <= synced["commit_ts_ns"]).all()


@pytest.mark.parametrize(
    ("sim_args", "inject", "counter"),
    [
        ([], {"kind": "rest_451", "seconds": 120}, "rest_451"),
        (["--no-snapshot"], None, "rest_5xx"),
    ],
    ids=["rest_451", "no_snapshot"],
)
def test_without_a_snapshot_no_record_is_ever_synced(
    tmp_path: Path, instance: str, tapes: Path, sim_args: list[str], inject, counter: str
) -> None:
    tape = tapes / FUTURES_TAPE
    with SimProcess(["--tape", str(tape), "--max", "--start-clients", "2", *sim_args]) as sim:
        if inject:
            sim.inject(**inject)
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market="futures",
            symbols=["BTCUSDT"],
            reconnect_max=0.2,
        )
        with IngestProcess(cfg, instance) as ingest:
            books = RecordLog(instance, ingest.books_ring, "book")
            c = ingest.wait_for(
                "refused snapshots and the whole tape",
                lambda c: c[counter] >= 3 and c["depth_diffs"] >= 6551,
                timeout=60,
            )
            assert c["snapshots"] == 0 and c["g_books_synced"] == 0
            assert c["snapshot_errors"] >= c[counter]
            assert books.reader.top("BTCUSDT") is None
            assert ingest.stop() == 0
            records = books.drain()
    assert not (records["flags"] & L.FLAG_SYNCED).any()
    if counter == "rest_451":
        assert "geo-blocked" in ingest.log()


def test_tls_feed_delivers_every_frame_at_once(tmp_path: Path, instance: str, tapes: Path) -> None:
    """wss:// and https:// as on the real exchange: frames TLS has already decrypted are read
    without waiting for more bytes on the socket, down to the tape's very last frame."""
    tape = tapes / FUTURES_TAPE
    diffs, trades = tape_events(tape)
    cert, key = self_signed_cert(tmp_path)
    args = ["--tape", str(tape), "--speed", "100", "--start-clients", "2"]
    with SimProcess(args) as sim:
        proxy = TlsProxy(sim.port, cert, key).start()
        try:
            cfg = write_config(
                tmp_path / "ingest.toml",
                instance,
                ws_url=f"wss://127.0.0.1:{proxy.port}",
                rest_url=f"https://127.0.0.1:{proxy.port}",
                market="futures",
                symbols=["BTCUSDT"],
                dead_letter_dir=tmp_path / "dead",
                silence_timeout=30.0,
            )
            ingest = IngestProcess(cfg, instance)
            with ingest.start(env={"SSL_CERT_FILE": str(cert)}):
                books = RecordLog(instance, ingest.books_ring, "book")

                def all_in(c: dict[str, int]) -> bool:
                    books.drain()
                    return c["depth_diffs"] == diffs and c["trades"] == len(trades)

                c = ingest.wait_for("every frame over TLS", all_in, timeout=60)
                assert c["reconnects"] == 0 and c["snapshots"] == 1
                assert "wss://127.0.0.1" in ingest.log()
                assert ingest.stop() == 0
                records = books.drain()
        finally:
            proxy.stop()
    comparable, wrong = compare_with_tickers(records, ["BTCUSDT"], tape_book_tickers(tape))
    assert not wrong and comparable >= 550
