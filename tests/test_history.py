"""The history archive with real rings, real archiver processes and real Parquet files: every
trade, ticker and candle record exactly once across kill -9 and a new segment (instance
restart), the book cadence, losses only when lapped, queries and their bad input, replay into
rings. The query and replay tests only read: they share one archive built once per module
(`archived`); a test that changes files works on a copy of it (`archived_copy`)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import REPO, remove_segments, unique_instance

from mdpipe import history
from mdpipe.cli import main as cli_main
from mdpipe.history.query import HistoryError, HistoryWarning
from mdpipe.readers import attach, candles
from mdpipe.shm import layout as L
from mdpipe.shm.segment import read_status
from mdpipe.shm.writer import RingWriter

VENUE = "binance-futures"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
T0 = 1_796_000_000_000_000_000  # 2026-11-30T...Z, ns
DEPTH = 8


def wait_for(pred: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Archiver:
    """`python -m mdpipe.history` for an instance, as the supervisor runs it."""

    def __init__(self, instance: str, root: Path, *settings: str) -> None:
        self.instance, self.root, self.settings = instance, root, settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.candles_sent: list[tuple[int, int, int]] = []  # what the writer committed

    def start(self) -> None:
        argv = [sys.executable, "-m", "mdpipe.history", "--instance", self.instance]
        for kv in (f"history.dir={self.root}", "history.flush_interval=0.05", *self.settings):
            argv += ["--set", kv]
        self.proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE)

    def journal(self) -> dict:
        try:
            return json.loads((self.root / "_archiver" / f"{self.instance}.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def cursor(self, ring: str) -> int:
        return self.journal().get("rings", {}).get(ring, {}).get("cursor", -1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err.decode()
        return err.decode()


@pytest.fixture
def archive(tmp_path: Path, instance: str) -> Iterator[Archiver]:
    arch = Archiver(instance, tmp_path / "history")
    yield arch
    if arch.proc is not None and arch.proc.poll() is None:
        arch.kill()


def trade_writer(instance: str, capacity: int = 1 << 16) -> RingWriter:
    return RingWriter.create(
        instance, "trades.t.0", "trade", symbols=SYMBOLS, capacity=capacity, exchange=VENUE
    )


def write_trades(w: RingWriter, first_id: int, n: int) -> None:
    for i in range(first_id, first_id + n):
        ts = T0 + i * 1_000_000
        w.commit_trade(i % 2, 0, ts, ts, ts + 500, i, i, i, 100.0 + i % 7, 0.5, 1 if i % 3 else -1)


def ticker_writer(instance: str, capacity: int = 1 << 14) -> RingWriter:
    return RingWriter.create(
        instance, "tickers.t.0", "ticker", symbols=SYMBOLS, capacity=capacity, exchange=VENUE
    )


def write_tickers(w: RingWriter, first: int, n: int) -> None:
    """Ticker i: symbol i % 2 at T0 + i ms, mark price 100 + i; open interest never sent."""
    rec = w.record
    for i in range(first, first + n):
        rec["symbol_id"] = i % 2
        rec["flags"] = L.FLAG_RESYNC if i < 2 else 0
        rec["exchange_ts_ns"] = T0 + i * 1_000_000
        rec["recv_ts_ns"] = T0 + i * 1_000_000 + 700
        rec["mark_price"] = 100.0 + i
        rec["index_price"] = 99.5 + i
        rec["funding_rate"] = 1e-4 * (i % 5)
        rec["next_funding_ts_ns"] = T0 + 8 * 3_600_000_000_000
        rec["open_interest"] = math.nan
        for name in ("last_price", "bid_price", "bid_qty", "ask_price", "ask_qty", "open_24h"):
            rec[name] = 50.0 + i
        for name in ("high_24h", "low_24h", "volume_24h", "quote_volume_24h"):
            rec[name] = math.nan
        rec["filled"] = sum(L.TICKER_BITS[b] for b in ("mark_price", "index_price", "funding_rate"))
        rec["updated"] = L.TICKER_BITS["mark_price"]
        w.commit(i % 2)


CANDLE_NS = 1_000_000_000
C0 = T0 - T0 % CANDLE_NS  # the first 1 s candle's open


def candle_writer(instance: str, capacity: int = 1 << 14) -> RingWriter:
    return RingWriter.create(
        instance, "candles_1s.t.0", "candle", symbols=SYMBOLS, capacity=capacity, exchange=VENUE
    )


def write_candles(w: RingWriter, first: int, n: int) -> list[tuple[int, int, int]]:
    """Candle i: symbol i % 2, interval i // 2; every 5th interval of BTCUSDT published
    again amended (revision 1, a higher high, a later receive time). (symbol, open, revision)
    of every record written."""
    rec, out = w.record, []
    for i in range(first, first + n):
        sid, slot = i % 2, i // 2
        revisions = 2 if sid == 0 and slot % 5 == 0 else 1
        for rev in range(revisions):
            rec["symbol_id"] = sid
            rec["flags"] = L.FLAG_CANDLE_AMENDED if rev else 0
            rec["open_ts_ns"] = C0 + slot * CANDLE_NS
            rec["interval_ns"] = CANDLE_NS
            rec["recv_ts_ns"] = C0 + slot * CANDLE_NS + 900_000_000 + rev * 300_000_000
            rec["first_trade_id"], rec["last_trade_id"] = 10 * slot, 10 * slot + 9
            rec["trades"] = 10 + rev
            rec["open"], rec["high"] = 100.0 + slot, 101.0 + slot + rev
            rec["low"], rec["close"] = 99.0 + slot, 100.5 + slot
            rec["volume"], rec["quote_volume"] = 5.0 + rev, 500.0 + rev
            rec["taker_buy_volume"] = 2.0
            rec["revision"] = rev
            w.commit(sid)
            out.append((sid, int(rec["open_ts_ns"]), rev))
    return out


def archived_ticker_times(root: Path) -> list[int]:
    """The exchange time of every archived ticker record (unique per record written)."""
    out: list[int] = []
    for sym in SYMBOLS:
        out += history.tickers(sym, root=root).column("exchange_ts_ns").to_pylist()
    return out


def archived_candles(root: Path) -> list[tuple[int, int, int]]:
    """(symbol id, open, revision) of every archived candle record."""
    out = []
    for sid, sym in enumerate(SYMBOLS):
        t = history.candles(sym, root=root, interval="1s", revisions=True, as_="numpy")
        out += [(sid, int(o), int(r)) for o, r in zip(t["open_ts_ns"], t["revision"], strict=True)]
    return out


def archived_trade_ids(root: Path) -> list[int]:
    """Every archived trade id; a skipped (unreadable) file fails the test."""
    ids: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", HistoryWarning)
        for sym in SYMBOLS:
            ids += history.trades(sym, root=root).column("trade_id").to_pylist()
    return ids


# ----- exactly once -----------------------------------------------------------------------


def test_every_trade_ticker_and_candle_exactly_once_across_kill_9(archive: Archiver) -> None:
    w, tw, cw = (make(archive.instance) for make in (trade_writer, ticker_writer, candle_writer))
    archive.start()
    written = tickers = 0
    candles_sent: list[tuple[int, int, int]] = []
    for _round in range(4):
        write_trades(w, written, 3000)
        write_tickers(tw, tickers, 1000)
        candles_sent += write_candles(cw, len(candles_sent), 400)
        written, tickers = written + 3000, tickers + 1000
        # Kill it after at least one flush of this round and usually mid-way through others.
        before = archive.cursor("trades.t.0")
        wait_for(lambda b=before: archive.cursor("trades.t.0") > b, what="a flush")
        write_trades(w, written, 500)
        write_tickers(tw, tickers, 200)
        candles_sent += write_candles(cw, len(candles_sent), 100)
        written, tickers = written + 500, tickers + 200
        archive.kill()
        archive.start()
    wait_for(
        lambda: (
            (archive.cursor("trades.t.0"), archive.cursor("tickers.t.0")) == (written, tickers)
            and archive.cursor("candles_1s.t.0") == len(candles_sent)
        ),
        what="the archiver to catch up",
    )
    for writer in (w, tw, cw):
        writer.close()
    archive.stop()
    ids = archived_trade_ids(archive.root)
    assert len(ids) == written
    assert sorted(ids) == list(range(written))
    times = archived_ticker_times(archive.root)
    assert sorted(times) == [T0 + i * 1_000_000 for i in range(tickers)]
    assert sorted(archived_candles(archive.root)) == sorted(candles_sent)
    totals = archive.journal()["totals"]
    assert totals["trades_archived"] == written and totals["trades_lost"] == 0
    assert totals["tickers_archived"] == tickers and totals["tickers_lost"] == 0
    assert totals["candles_archived"] == len(candles_sent) and totals["candles_lost"] == 0
    # No temporary file of an interrupted flush survives.
    assert not list(archive.root.rglob("*.tmp"))


def test_every_trade_exactly_once_across_a_new_segment(archive: Archiver) -> None:
    """An instance restart unlinks the rings; the new ones start at record 0, generation 1."""
    w = trade_writer(archive.instance)
    archive.start()
    write_trades(w, 0, 4000)
    wait_for(lambda: archive.cursor("trades.t.0") == 4000, what="the first run archived")
    w.close()
    archive.stop()  # drains and flushes, as at an instance stop
    remove_segments(archive.instance)
    w = trade_writer(archive.instance)  # a new segment: its cursor (0) is below the saved one
    write_trades(w, 4000, 1000)
    archive.start()
    wait_for(lambda: archive.cursor("trades.t.0") == 1000, what="the new segment archived")
    archive.kill()  # and once more without a drain: the journal alone says where to go on
    write_trades(w, 5000, 5000)  # the new segment now passes the first one's saved cursor
    archive.start()
    wait_for(lambda: archive.cursor("trades.t.0") == 6000, what="the rest archived")
    w.close()
    archive.stop()
    assert sorted(archived_trade_ids(archive.root)) == list(range(10000))


# ----- losses, cadence --------------------------------------------------------------------


def test_losses_are_counted_exactly_and_only_when_lapped(archive: Archiver) -> None:
    w = trade_writer(archive.instance, capacity=64)
    tw = ticker_writer(archive.instance, capacity=64)
    archive.start()
    write_trades(w, 0, 50)
    write_tickers(tw, 0, 50)
    wait_for(
        lambda: archive.cursor("trades.t.0") == archive.cursor("tickers.t.0") == 50,
        what="the first trades and tickers",
    )
    counters = read_status(archive.instance, "archiver").counters
    assert counters["trades_lost"] == counters["tickers_lost"] == 0
    archive.kill()
    write_trades(w, 50, 1000)  # laps the stopped archiver: the newest 63 remain readable
    write_tickers(tw, 50, 1000)
    archive.start()
    wait_for(
        lambda: archive.cursor("trades.t.0") == archive.cursor("tickers.t.0") == 1050,
        what="the archiver to go on",
    )
    w.close()
    tw.close()
    archive.stop()
    totals = archive.journal()["totals"]
    # The slot the writer fills next is never read: the oldest readable record is w - 64 + 1.
    oldest = 1050 - 64 + 1
    assert totals["trades_lost"] == totals["tickers_lost"] == oldest - 50
    ids = sorted(archived_trade_ids(archive.root))
    assert ids == list(range(50)) + list(range(oldest, 1050))
    kept = list(range(50)) + list(range(oldest, 1050))
    assert sorted(archived_ticker_times(archive.root)) == [T0 + i * 1_000_000 for i in kept]


def test_history_kinds_chooses_the_rings_archived(archive: Archiver) -> None:
    from mdpipe import config

    archive.settings = ("history.kinds=trades,candles",)
    w, tw, cw = (make(archive.instance) for make in (trade_writer, ticker_writer, candle_writer))
    write_trades(w, 0, 100)
    write_tickers(tw, 0, 100)
    sent = write_candles(cw, 0, 10)
    archive.start()
    wait_for(
        lambda: archive.cursor("trades.t.0") == 100 and archive.cursor("candles_1s.t.0") > 0,
        what="trades and candles archived",
    )
    archive.stop()
    for writer in (w, tw, cw):
        writer.close()
    assert sorted(archived_trade_ids(archive.root)) == list(range(100))
    assert sorted(archived_candles(archive.root)) == sorted(sent)
    assert not (archive.root / "tickers").exists()
    assert "tickers.t.0" not in archive.journal()["rings"]
    with pytest.raises(config.ConfigError, match="history.kinds: 'quotes' is not one of"):
        config.load(None, overrides=["history.kinds=trades,quotes"])


def book_writer(instance: str) -> RingWriter:
    return RingWriter.create(
        instance, "books.t.0", "book", symbols=SYMBOLS, capacity=1 << 14, depth=20, exchange=VENUE
    )


def write_books(w: RingWriter, n: int, step_ns: int, first: int = 0) -> list[tuple[int, int]]:
    """n books of BTCUSDT every step_ns of exchange time; (exchange ts, last update id) each."""
    out = []
    for i in range(first, first + n):
        ts = T0 + i * step_ns
        w.bids[:, 0] = 100.0 - np.arange(20) * 0.1 - i * 1e-3
        w.bids[:, 1] = 1.0 + i
        w.asks[:, 0] = 100.1 + np.arange(20) * 0.1
        w.asks[:, 1] = 2.0 + i
        w.commit_book(0, L.FLAG_SYNCED, ts, ts + 1000, 10 * i + 1, 10 * i + 10, 10 * i, 20, 20)
        out.append((ts, 10 * i + 10))
    return out


def test_books_follow_the_cadence_and_depth(archive: Archiver) -> None:
    archive.settings = ("history.book_interval_ms=100", f"history.book_depth={DEPTH}")
    w = book_writer(archive.instance)
    archive.start()
    sent = write_books(w, 500, 7_000_000)  # every 7 ms
    wait_for(lambda: archive.cursor("books.t.0") == 500, what="half the books")
    archive.kill()  # the cadence state is committed with the files: no slot twice after it
    sent += write_books(w, 500, 7_000_000, first=500)
    archive.start()
    wait_for(lambda: archive.cursor("books.t.0") == 1000, what="every book read")
    w.close()
    archive.stop()
    got = history.books("BTCUSDT", root=archive.root, as_="numpy")
    expected, last_slot = [], -1
    for ts, uid in sent:
        if ts // 100_000_000 > last_slot:
            last_slot = ts // 100_000_000
            expected.append(uid)
    assert got["last_update_id"].tolist() == expected
    assert got["bid_price"].shape == (len(expected), DEPTH)
    assert got["bid_count"].max() == DEPTH
    i = 0  # the first book archived is sent[0]: levels kept exactly
    assert got["bid_price"][i].tolist() == pytest.approx((100.0 - np.arange(DEPTH) * 0.1).tolist())
    totals = archive.journal()["totals"]
    assert totals["books_archived"] == len(expected)
    assert totals["books_skipped"] == 1000 - len(expected)


# ----- queries (one archive, built once, read by every test below) ---------------------

N_TICKERS, N_CANDLES = 300, 60


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archiver]:
    """An archive holding 2000 trades (in at least two files per symbol), 200 books, 300
    tickers and 60 one-second candles (BTCUSDT's every 5th amended once); read-only."""
    name = unique_instance()
    arch = Archiver(name, tmp_path_factory.mktemp("archived") / "history")
    writers = [make(name) for make in (trade_writer, book_writer, ticker_writer, candle_writer)]
    tw, bw, xw, cw = writers
    try:
        arch.start()
        write_trades(tw, 0, 1000)
        wait_for(lambda: arch.cursor("trades.t.0") == 1000)
        write_trades(tw, 1000, 1000)
        write_books(bw, 200, 10_000_000)
        write_tickers(xw, 0, N_TICKERS)
        arch.candles_sent = write_candles(cw, 0, N_CANDLES)
        wait_for(
            lambda: (
                (arch.cursor("trades.t.0"), arch.cursor("books.t.0")) == (2000, 200)
                and arch.cursor("tickers.t.0") == N_TICKERS
                and arch.cursor("candles_1s.t.0") == len(arch.candles_sent)
            )
        )
        for w in writers:
            w.close()
        arch.stop()
        yield arch
    finally:
        if arch.proc is not None and arch.proc.poll() is None:
            arch.kill()
        remove_segments(name)


@pytest.fixture
def archived_copy(archived: Archiver, tmp_path: Path) -> Iterator[Archiver]:
    """A copy of the module's archive (same instance, journal and files) a test may change."""
    copy = Archiver(archived.instance, tmp_path / "history")
    shutil.copytree(archived.root, copy.root)
    yield copy
    if copy.proc is not None and copy.proc.poll() is None:
        copy.kill()


def mdpipe(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line as a user runs it: its own process."""
    return subprocess.run(
        [sys.executable, "-m", "mdpipe.cli", *args], cwd=REPO, capture_output=True, text=True
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command line run in this process (no interpreter start): exit code, stdout,
    stderr; an exception the command did not turn into an error line fails the test."""
    result = CliRunner().invoke(cli_main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_query_api_and_command_line(archived: Archiver) -> None:
    root = archived.root
    start, end = T0 + 100 * 1_000_000, T0 + 200 * 1_000_000
    t = history.trades("BTCUSDT", start, end, root=root)
    assert t.column("trade_id").to_pylist() == list(range(100, 200, 2))
    assert set(t.column("venue").to_pylist()) == {VENUE}
    few = history.trades("BTCUSDT", start, end, root=root, columns=["price", "side"])
    assert few.column_names == ["ts", "price", "side", "symbol", "venue"]
    assert few.column("price").equals(t.column("price"))
    with pytest.raises(HistoryError, match=r"columns: \['bid'\] unknown"):
        history.trades("BTCUSDT", root=root, columns=["bid"])
    arr = history.trades("ETHUSDT", root=root, venue=VENUE, as_="numpy")
    assert arr["trade_id"].tolist() == list(range(1, 2000, 2))
    assert np.all(np.diff(arr["ts"].astype(np.int64)) > 0)
    out = cli("history", "trades", "BTCUSDT", "--dir", str(root), "--format", "csv")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith('"ts"') and len(lines) == 1 + 1000
    out = cli("history", "books", "BTCUSDT", "--dir", str(root), "--limit", "3")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 4, out
    pq_out = root.parent / "out.parquet"
    out = cli(
        "history", "books", "BTCUSDT", "--dir", str(root), "--format", "parquet", "-o", str(pq_out)
    )
    assert out.returncode == 0, out.stderr
    assert pq.read_table(pq_out).num_rows == 200


def test_tickers_come_back_as_written(archived: Archiver) -> None:
    root = archived.root
    got = history.tickers("ETHUSDT", root=root, as_="numpy")
    sent = range(1, N_TICKERS, 2)  # ETHUSDT's: the odd ones
    assert got["exchange_ts_ns"].tolist() == [T0 + i * 1_000_000 for i in sent]
    assert got["mark_price"].tolist() == [100.0 + i for i in sent]
    assert got["funding_rate"].tolist() == pytest.approx([1e-4 * (i % 5) for i in sent])
    assert got["recv_ts_ns"].tolist() == [T0 + i * 1_000_000 + 700 for i in sent]
    # A field the venue never sent stays NaN, its bit clear: never a guessed value.
    assert np.isnan(got["open_interest"]).all()
    assert not (got["filled"] & L.TICKER_BITS["open_interest"]).any()
    assert (got["filled"] & L.TICKER_BITS["mark_price"]).all()
    assert got["symbol_seq"].tolist() == list(range(1, len(sent) + 1))
    assert got["ts"].astype(np.int64).tolist() == got["exchange_ts_ns"].tolist()
    # The range is on exchange time; columns pick fields.
    t = history.tickers(
        "BTCUSDT", T0 + 10_000_000, T0 + 20_000_000, root=root, columns=["mark_price"]
    )
    assert t.column_names == ["ts", "mark_price", "symbol", "venue"]
    assert t.column("mark_price").to_pylist() == [100.0 + i for i in range(10, 20, 2)]
    whole = history.tickers("BTCUSDT", root=root)
    assert whole.num_rows == N_TICKERS // 2
    assert whole.column("mark_price")[-1].as_py() == 100.0 + N_TICKERS - 2
    out = cli("history", "tickers", "BTCUSDT", "--dir", str(root), "--limit", "2")
    assert out.returncode == 0, out.stderr
    head, first, _ = out.stdout.splitlines()[:3]
    assert "mark_price" in head and "funding_rate" in head and "100" in first
    out = cli("history", "tickers", "ETHUSDT", "--dir", str(root), "--format", "csv")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1 + N_TICKERS // 2


def test_candles_come_back_at_their_newest_revision(archived: Archiver) -> None:
    root = archived.root
    every = history.candles("BTCUSDT", root=root, interval="1s", revisions=True, as_="numpy")
    sent = [(o, r) for sid, o, r in archived.candles_sent if sid == 0]
    assert list(zip(every["open_ts_ns"].tolist(), every["revision"].tolist(), strict=True)) == sent
    got = history.candles("BTCUSDT", root=root, interval="1s", as_="numpy")
    slots = range(N_CANDLES // 2)
    assert got["open_ts_ns"].tolist() == [C0 + k * CANDLE_NS for k in slots]
    assert got["ts"].astype(np.int64).tolist() == got["open_ts_ns"].tolist()
    assert got["revision"].tolist() == [1 if k % 5 == 0 else 0 for k in slots]
    assert got["high"].tolist() == [101.0 + k + (k % 5 == 0) for k in slots]
    assert got["open"].tolist() == [100.0 + k for k in slots]
    assert (got["interval_ns"] == CANDLE_NS).all()
    assert (got["flags"][got["revision"] == 1] & L.FLAG_CANDLE_AMENDED).all()
    # A range selects by interval start.
    few = history.candles(
        "ETHUSDT", C0 + 3 * CANDLE_NS, C0 + 6 * CANDLE_NS, root=root, interval="1s"
    )
    assert few.column("open").to_pylist() == [103.0, 104.0, 105.0]
    out = cli(
        "history", "candles", "BTCUSDT", "--interval", "1s", "--dir", str(root), "--format", "csv"
    )
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1 + N_CANDLES // 2, out
    out = cli(
        "history",
        "candles",
        "BTCUSDT",
        "--interval",
        "1s",
        "--revisions",
        "--dir",
        str(root),
        "--format",
        "csv",
    )
    assert len(out.stdout.splitlines()) == 1 + len(sent)
    out = cli(
        "history", "candles", "ETHUSDT", "--interval", "1s", "--dir", str(root), "--limit", "1"
    )
    assert out.returncode == 0 and "open" in out.stdout and "100" in out.stdout.splitlines()[1]
    assert history.intervals(root) == ["1s"]
    assert history.symbols("candles", root) == {s: [VENUE] for s in SYMBOLS}


def test_query_bad_input_is_one_clear_message(archived: Archiver) -> None:
    root = archived.root
    with pytest.raises(HistoryError, match="unknown symbol 'NOPE'.*BTCUSDT, ETHUSDT"):
        history.trades("NOPE", root=root)
    with pytest.raises(HistoryError, match="empty range"):
        history.trades("BTCUSDT", "2026-12-02", "2026-12-01T00:00", root=root)
    with pytest.raises(HistoryError, match="unknown venue 'okx'"):
        history.trades("BTCUSDT", root=root, venue="okx")
    with pytest.raises(HistoryError, match="not a time"):
        history.trades("BTCUSDT", "yesterday-ish", root=root)
    with pytest.raises(HistoryError, match="unknown symbol 'NOPE': no archived tickers"):
        history.tickers("NOPE", root=root)
    with pytest.raises(HistoryError, match=r"no 1m candles archived \(archived: 1s\)"):
        history.candles("BTCUSDT", root=root)
    with pytest.raises(HistoryError, match="candle interval '7x'"):
        history.candles("BTCUSDT", root=root, interval="7x")
    with pytest.raises(HistoryError, match=r"columns: \['price'\] unknown; tickers have"):
        history.tickers("BTCUSDT", root=root, columns=["price"])
    for args, needle in [
        (["trades", "NOPE"], "unknown symbol 'NOPE'"),
        (["trades", "BTCUSDT", "--from", "2026-12-02", "--to", "2026-12-01"], "empty range"),
        (["trades", "BTCUSDT", "--format", "parquet"], "--format parquet needs --output"),
        (["tickers", "NOPE"], "unknown symbol 'NOPE': no archived tickers"),
        (["tickers", "BTCUSDT", "--from", "2026-12-02", "--to", "2026-12-01"], "empty range"),
        (["candles", "NOPE", "--interval", "1s"], "unknown symbol 'NOPE': no archived 1s candles"),
        (["candles", "BTCUSDT", "--interval", "1h"], "no 1h candles archived (archived: 1s)"),
        (["candles", "BTCUSDT", "--interval", "7s"], "candle interval '7s' does not divide"),
    ]:
        out = cli("history", *args, "--dir", str(root))
        assert out.returncode == 1, out
        assert needle in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    # The same from a process of its own: one line, no traceback.
    out = mdpipe("history", "candles", "NOPE", "--dir", str(root))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == (
        "mdpipe history: interval '1m': no 1m candles archived (archived: 1s)"
    ), out.stderr
    for kind in ("trades", "tickers"):
        out = cli(
            "history",
            kind,
            "BTCUSDT",
            "--dir",
            str(root),
            "--from",
            "2020-01-01",
            "--to",
            "2020-01-02",
        )
        assert out.returncode == 0 and f"no {kind} of BTCUSDT in that range" in out.stderr
    out = cli(
        "history",
        "candles",
        "BTCUSDT",
        "--interval",
        "1s",
        "--dir",
        str(root),
        "--to",
        "2020-01-02",
    )
    assert out.returncode == 0 and "no 1s candles of BTCUSDT in that range" in out.stderr


def test_a_corrupt_file_is_skipped_and_named(archived_copy: Archiver) -> None:
    root = archived_copy.root
    files = sorted(root.glob("trades/venue=*/symbol=BTCUSDT/date=*/*.parquet"))
    assert len(files) >= 2
    victim = files[0]
    bad_rows = history.trades("BTCUSDT", root=root).num_rows
    n_victim = pq.read_metadata(victim).num_rows
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # torn
    with pytest.warns(HistoryWarning, match=str(victim)):
        t = history.trades("BTCUSDT", root=root)
    assert t.num_rows == bad_rows - n_victim
    out = mdpipe("history", "trades", "BTCUSDT", "--dir", str(root), "--format", "csv")
    assert out.returncode == 0
    assert f"skipped {victim}" in out.stderr and "Traceback" not in out.stderr
    # Garbage that ends like Parquet (a valid-looking footer) is caught when DuckDB reads it.
    files[1].write_bytes(b"PAR1" + os.urandom(2000) + files[1].read_bytes()[-200:])
    with pytest.warns(HistoryWarning):
        history.trades("BTCUSDT", root=root)
    # The same path for tickers and candles.
    for kind, args in (("tickers", {}), ("candles", {"interval": "1s"})):
        sub = kind if kind == "tickers" else "candles_1s"
        victim = sorted(root.glob(f"{sub}/venue=*/symbol=ETHUSDT/date=*/*.parquet"))[0]
        victim.write_bytes(b"not parquet")
        with pytest.warns(HistoryWarning, match=str(victim)):
            getattr(history, kind)("ETHUSDT", root=root, **args)
        opts = ["--interval", "1s"] if args else []
        out = cli("history", kind, "ETHUSDT", *opts, "--dir", str(root))
        assert out.returncode == 0 and f"skipped {victim}" in out.stderr, out.stderr


# ----- replay -----------------------------------------------------------------------------


def test_replay_writes_archived_records_into_rings(archived: Archiver) -> None:
    target = unique_instance()
    try:
        out = cli("replay", "--dir", str(archived.root), "--max", "--instance", target)
        assert out.returncode == 0, out.stderr
        books = attach(target, "books")
        books.seek_oldest()
        got = books.read_batch(10_000)
        want = history.books("BTCUSDT", root=archived.root, as_="numpy")
        assert got["last_update_id"].tolist() == want["last_update_id"].tolist()
        assert got["exchange_ts_ns"].tolist() == want["exchange_ts_ns"].tolist()
        assert np.all(got["flags"] & L.FLAG_REPLAYED)
        assert np.array_equal(got["bids"][:, :, 0], want["bid_price"])
        trades = attach(target, "trades")
        trades.seek_oldest()
        t = trades.read_batch(10_000)
        assert t["trade_id"].tolist() == list(range(2000))  # time order across symbols
        assert trades.symbols == SYMBOLS
        books.close()
        trades.close()
        # Tickers: the same records, in exchange-time order, under the same attach() name.
        with attach(target, "tickers", kind="ticker") as tickers:
            tickers.seek_oldest()
            x = tickers.read_batch(10_000)
            assert x["exchange_ts_ns"].tolist() == [T0 + i * 1_000_000 for i in range(N_TICKERS)]
            assert x["mark_price"].tolist() == [100.0 + i for i in range(N_TICKERS)]
            assert np.isnan(x["open_interest"]).all() and np.all(x["flags"] & L.FLAG_REPLAYED)
            assert tickers.latest("ETHUSDT")["mark_price"] == 100.0 + N_TICKERS - 1
        # Candles: every revision, each when it became known (interval end, or the amending
        # trade's receive time), so candles() reads the newest revision as it does live.
        with attach(target, "candles_1s", kind="candle") as ring:
            ring.seek_oldest()
            c = ring.read_batch(10_000)
        assert len(c) == len(archived.candles_sent)
        known = np.maximum(c["open_ts_ns"] + c["interval_ns"], c["recv_ts_ns"])
        assert np.all(np.diff(known) >= 0)
        live = history.candles("BTCUSDT", root=archived.root, interval="1s", as_="numpy")
        bars = candles(target, "BTCUSDT", "1s")
        assert bars["open_ts_ns"].tolist() == live["open_ts_ns"].tolist()
        assert bars["revision"].tolist() == live["revision"].tolist()
        assert bars["high"].tolist() == live["high"].tolist()
        # The example strategy runs unchanged on the replayed rings.
        out = subprocess.run(
            [sys.executable, "readers/strategy_example.py", "--instance", target, "--replay"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.splitlines()[-1])
        assert summary["records"] == summary["replayed_records"] == len(want)
        assert summary["lost"] == 0 and summary["trade_volume"] == pytest.approx(1000 * 0.5)
    finally:
        remove_segments(target)


def test_finished_days_are_compacted_into_one_file(archived_copy: Archiver) -> None:
    archived = archived_copy
    root = archived.root
    before = {s: history.trades(s, root=root) for s in SYMBOLS}
    ticks = {s: history.tickers(s, root=root, as_="numpy") for s in SYMBOLS}
    assert len(list(root.glob("trades/venue=*/symbol=BTCUSDT/date=*/*.parquet"))) >= 2
    archived.start()  # its first flush looks for finished days (T0's day is before today)
    wait_for(lambda: archived.journal().get("replaces"), what="a compaction")
    archived.stop()
    for kind in ("trades", "books", "tickers", "candles_1s"):
        for day_dir in root.glob(f"{kind}/venue=*/symbol=*/date=*"):
            files = list(day_dir.glob("*.parquet"))
            assert len(files) == 1, files  # merged ("day-...") or alone from the start
    for s in SYMBOLS:
        assert history.trades(s, root=root).equals(before[s])
        after = history.tickers(s, root=root, as_="numpy")
        for name in ticks[s].dtype.names:  # NaN where never sent: equal as arrays, not as ==
            np.testing.assert_array_equal(after[name], ticks[s][name], err_msg=name)
    assert archived.journal()["totals"]["days_compacted"] >= 2  # BTCUSDT and ETHUSDT trades


def test_history_keep_days_deletes_older_days(archived_copy: Archiver) -> None:
    from datetime import date

    from mdpipe.history.store import expire

    root = archived_copy.root
    days = {p.name for p in root.glob("*/venue=*/symbol=*/date=*")}
    assert days == {"date=2026-11-30"}
    assert expire(root, 0) == []
    assert expire(root, 3, today=date(2026, 12, 2)) == []  # 2 days old: kept
    partitions = len(list(root.glob("*/venue=*/symbol=*")))
    removed = expire(root, 2, today=date(2026, 12, 2))
    assert len(removed) == partitions >= 7  # trades, tickers, candles of 2 symbols; books
    assert not list(root.glob("*/venue=*"))  # emptied symbol and venue directories go too
    with pytest.raises(HistoryError, match="unknown symbol"):
        history.trades("BTCUSDT", root=root)
    with pytest.raises(HistoryError, match="unknown symbol"):
        history.tickers("BTCUSDT", root=root)
