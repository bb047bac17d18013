"""The history archive: archiver throughput against the ingest's peak, its CPU at the demo
rate, bytes per million records, a day of 5 M trades queried, replay at --max.

In one run:
1. the ingest's peak record rate: the ingest's own book path (parse, sync, book, top-20, ring
   commit) on the recorded futures tape, one record per diff, CPU time (bench/ingest_throughput);
2. the archiver draining full rings (book records of 20 levels and trades) into Parquet, CPU
   time of the whole process (pyarrow's threads included): records/s and the ratio to (1);
3. `python -m mdpipe.history` tailing rings written at the demo rate, its CPU share over 10 s;
4. bytes on disk per million book records (10 levels kept) and per million trades;
5. one symbol's day of 5 M trades in the files a day of flushes leaves: `mdpipe.history.trades`
   (DuckDB) against reading the same files with pyarrow.dataset and sorting;
6. `mdpipe replay --max` from the archive of (2): records committed per second;
7. one symbol's day of ticker records (2 a second: mark price and 24 h ticker, as Binance
   futures sends them) and of 1 s candles (every 50th amended once), compacted: bytes per
   million records, and `history.tickers` / `history.candles` (newest revision per interval,
   DuckDB) against pyarrow.dataset + sort (every revision, so it does less).

Run: .venv/bin/python bench/history.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_throughput import Tape, ingest_pipeline, run  # noqa: E402

from mdpipe import config, history  # noqa: E402
from mdpipe.history import replay, schema  # noqa: E402
from mdpipe.history.archiver import Archiver  # noqa: E402
from mdpipe.history.store import Journal, write_temp  # noqa: E402
from mdpipe.shm import layout as L  # noqa: E402
from mdpipe.shm.segment import unlink_instance  # noqa: E402
from mdpipe.shm.writer import RingWriter  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
T0 = 1_796_083_200_000_000_000  # 2026-12-01T00:00Z
DEMO_BOOKS_PER_S, DEMO_TRADES_PER_S = 300, 100  # what config/demo.toml's simulator produces


def ingest_peak(runs: int) -> float:
    """Book records/s of one ingest core on the futures tape (best of runs, CPU time)."""
    tape = Tape()
    writers: list[RingWriter] = []
    best = min(run(ingest_pipeline(tape, writers).stages, tape.after) for _ in range(runs))
    for w in writers:
        w.close(unlink=True)
    return len(tape.after) / best


def fill(instance: str, n_books: int, n_trades: int) -> None:
    """Rings holding n_books book records (20 levels, a random walk) and n_trades trades."""
    rng = np.random.default_rng(1)
    cap = 1 << max(n_books, n_trades, 2).bit_length()
    bw = RingWriter.create(
        instance,
        "books.b.0",
        "book",
        symbols=SYMBOLS,
        capacity=cap,
        depth=20,
        exchange="binance-futures",
    )
    tw = RingWriter.create(
        instance, "trades.b.0", "trade", symbols=SYMBOLS, capacity=cap, exchange="binance-futures"
    )
    mid = 60000.0
    steps = np.arange(20) * 0.1
    for i in range(n_books):
        mid += rng.normal(0, 0.5)
        ts = T0 + i * 2_000_000
        bw.bids[:, 0] = np.round(mid - 0.05 - steps, 1)
        bw.bids[:, 1] = np.round(rng.exponential(1.0, 20), 3)
        bw.asks[:, 0] = np.round(mid + 0.05 + steps, 1)
        bw.asks[:, 1] = np.round(rng.exponential(1.0, 20), 3)
        bw.commit_book(
            i % 3, L.FLAG_SYNCED, ts, ts + 900_000, 10 * i + 1, 10 * i + 10, 10 * i, 20, 20
        )
    prices = np.round(60000 + np.cumsum(rng.normal(0, 0.5, n_trades)), 1)
    qtys = np.round(rng.exponential(0.1, n_trades), 3)
    for i in range(n_trades):
        ts = T0 + i * 2_000_000
        tw.commit_trade(
            i % 3,
            0,
            ts,
            ts,
            ts + 900_000,
            1_000_000 + i,
            0,
            0,
            float(prices[i]),
            float(qtys[i]),
            1 if i & 1 else -1,
        )
    bw.close()
    tw.close()


def archive_full_rings(
    instance: str, root: Path, n_books: int, n_trades: int
) -> tuple[float, float]:
    """(records/s in CPU time, records/s in wall time) of the archiver draining full rings."""
    cfg = config.load(
        None, overrides=[f"instance={instance}", f"history.dir={root}", "history.batch=8192"]
    )
    arch = Archiver(cfg)
    arch._discover()
    for ring in arch.rings.values():
        ring.reader.seek_oldest()
    c0, w0 = time.process_time(), time.perf_counter()
    done = 0
    while done < n_books + n_trades:
        done += arch.step()
        if arch.buffered >= 1_000_000:
            arch.flush()
    arch.flush()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    arch.close()
    return done / cpu, done / wall


def cpu_at_demo_rate(instance: str, root: Path, seconds: float) -> float:
    """% of a core `python -m mdpipe.history` uses on rings written at the demo rate."""
    bw = RingWriter.create(
        instance,
        "books.d.0",
        "book",
        symbols=SYMBOLS,
        capacity=1 << 14,
        depth=20,
        exchange="binance-futures",
    )
    tw = RingWriter.create(
        instance,
        "trades.d.0",
        "trade",
        symbols=SYMBOLS,
        capacity=1 << 14,
        exchange="binance-futures",
    )
    stop = threading.Event()

    def write() -> None:
        i = 0
        start = time.monotonic()
        while not stop.is_set():
            now = time.time_ns()
            bw.bids[:, 0] = 100 - np.arange(20) * 0.1
            bw.asks[:, 0] = 100.1 + np.arange(20) * 0.1
            bw.commit_book(i % 3, L.FLAG_SYNCED, now, now, i + 1, i + 1, i, 20, 20)
            if i % 3 == 0:
                tw.commit_trade(i % 3, 0, now, now, now, i, i, i, 100.0, 1.0, 1)
            i += 1
            time.sleep(max(0.0, start + i / DEMO_BOOKS_PER_S - time.monotonic()))

    t = threading.Thread(target=write, daemon=True)
    t.start()
    argv = [
        sys.executable,
        "-m",
        "mdpipe.history",
        "--instance",
        instance,
        "--set",
        f"history.dir={root}",
    ]
    proc = subprocess.Popen(argv, cwd=REPO)
    time.sleep(3.0)  # imports and attaching
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    c0, w0 = cpu(), time.monotonic()
    time.sleep(seconds)
    share = (cpu() - c0) / (time.monotonic() - w0) * 100
    proc.terminate()
    proc.wait(30)
    stop.set()
    t.join()
    bw.close()
    tw.close()
    return share


def day_of_trades(root: Path, n: int, files: int) -> None:
    """n trades of BTCUSDT over one day in `files` files, as the archiver's flushes leave them."""
    rng = np.random.default_rng(2)
    ts = np.sort(rng.integers(0, 86_400 * 10**9, n)) + T0
    j = Journal(root, "bench")
    per = n // files
    dt = np.dtype([(c, L.TRADE_DTYPE.fields[c][0]) for c in schema.TRADE_COLUMNS])
    for f in range(files):
        sl = slice(f * per, n if f == files - 1 else (f + 1) * per)
        m = sl.stop - sl.start
        recs = np.zeros(m, dt)
        recs["exchange_ts_ns"] = recs["event_ts_ns"] = ts[sl]
        recs["recv_ts_ns"] = recs["commit_ts_ns"] = ts[sl] + 800_000
        recs["trade_id"] = np.arange(sl.start, sl.stop)
        recs["price"] = np.round(60000 + rng.normal(0, 50, m), 1)
        recs["qty"] = np.round(rng.exponential(0.1, m), 3)
        recs["side"] = np.where(rng.random(m) < 0.5, 1, -1)
        recs["symbol_seq"] = np.arange(sl.start, sl.stop) + 1
        final = j.file_name("trades", "binance-futures", "BTCUSDT", "2026-12-01", f + 1)
        write_temp(schema.trades_table(recs), final)
        j.files.append(str(final.relative_to(root)))
    j.commit([root / f for f in j.files])


def compact_day(root: Path) -> float:
    """Seconds the archiver's compaction of the finished day takes (files -> one file)."""
    j = Journal.load(root, "bench")
    t0 = time.perf_counter()
    j.compact(next((root / "trades").glob("venue=*/symbol=*/date=*")))
    return time.perf_counter() - t0


def time_query(
    root: Path, runs: int, columns: list[str] | None = None
) -> tuple[float, float, float, int]:
    """(best wall s, its CPU s, pyarrow.dataset + sort wall s, rows) for the day of trades."""
    best = (float("inf"), 0.0)
    rows = 0
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        t = history.trades("BTCUSDT", "2026-12-01", "2026-12-01", root=root, columns=columns)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        rows = t.num_rows
        best = min(best, (wall, cpu))
        del t
    alt = float("inf")
    for _ in range(runs):
        w0 = time.perf_counter()
        d = ds.dataset(
            root / "trades" / "venue=binance-futures" / "symbol=BTCUSDT", format="parquet"
        )
        t = d.to_table(columns=None if columns is None else ["ts", *columns]).sort_by("ts")
        alt = min(alt, time.perf_counter() - w0)
        del t, d
    return best[0], best[1], alt, rows


def day_of_derived(root: Path, n_tickers: int) -> tuple[int, int]:
    """A compacted day of BTCUSDT tickers (n_tickers) and 1 s candles; (tickers, candles)."""
    rng = np.random.default_rng(3)
    j = Journal(root, "bench")
    t = np.zeros(n_tickers, L.TICKER_DTYPE)
    t["exchange_ts_ns"] = T0 + np.sort(rng.integers(0, 86_400 * 10**9, n_tickers))
    t["recv_ts_ns"] = t["commit_ts_ns"] = t["exchange_ts_ns"] + 900_000
    t["symbol_seq"] = np.arange(1, n_tickers + 1)
    walk = np.round(60000 + np.cumsum(rng.normal(0, 2, n_tickers)), 1)
    for name in ("mark_price", "index_price", "last_price", "bid_price", "ask_price"):
        t[name] = walk
    t["funding_rate"] = np.round(rng.normal(1e-4, 5e-5, n_tickers), 8)
    t["next_funding_ts_ns"] = T0 + 8 * 3_600_000_000_000
    for name in ("open_interest", "bid_qty", "ask_qty", "volume_24h", "quote_volume_24h"):
        t[name] = np.round(rng.exponential(1000, n_tickers), 3)
    t["filled"] = t["updated"] = (1 << len(L.TICKER_VALUES)) - 1
    n = 86_400
    amended = np.arange(0, n, 50)
    c = np.zeros(n + len(amended), L.CANDLE_DTYPE)
    slot = np.r_[np.arange(n), amended]
    c["open_ts_ns"] = T0 + slot * 10**9
    c["interval_ns"] = 10**9
    c["recv_ts_ns"] = c["commit_ts_ns"] = (
        c["open_ts_ns"] + 10**9 + np.r_[np.zeros(n), 2e9 * np.ones(len(amended))].astype(np.int64)
    )
    c["revision"] = np.r_[np.zeros(n), np.ones(len(amended))]
    c["symbol_seq"] = np.arange(1, len(c) + 1)
    price = np.round(60000 + np.cumsum(rng.normal(0, 3, n)), 1)[slot]
    c["open"], c["close"], c["high"], c["low"] = price, price + 0.5, price + 2, price - 2
    c["volume"] = np.round(rng.exponential(5, len(c)), 3)
    c["trades"] = rng.integers(1, 200, len(c))
    c = c[np.argsort(c["commit_ts_ns"], kind="stable")]  # as the ring carried them
    for kind, recs in (("tickers", t), ("candles_1s", c)):
        final = j.file_name(kind, "binance-futures", "BTCUSDT", "2026-12-01", j.flush_no + 1)
        j.flush_no += 1
        write_temp(schema.table_of(kind, recs, 1), final)
        j.commit([final])
    return len(t), len(c)


def time_derived(root: Path, runs: int) -> dict[str, tuple[float, float, float, int]]:
    """kind -> (best wall s, its CPU s, pyarrow.dataset + sort wall s, rows) for the day."""
    out = {}
    for kind, query in (
        ("tickers", lambda: history.tickers("BTCUSDT", "2026-12-01", "2026-12-01", root=root)),
        (
            "candles_1s",
            lambda: history.candles(
                "BTCUSDT", "2026-12-01", "2026-12-01", interval="1s", root=root
            ),
        ),
    ):
        best, rows = (float("inf"), 0.0), 0
        for _ in range(runs):
            c0, w0 = time.process_time(), time.perf_counter()
            rows = query().num_rows
            best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
        alt = float("inf")
        for _ in range(runs):
            w0 = time.perf_counter()
            d = ds.dataset(root / kind / "venue=binance-futures" / "symbol=BTCUSDT")
            d.to_table().sort_by("ts")
            alt = min(alt, time.perf_counter() - w0)
        out[kind] = (*best, alt, rows)
    return out


def replay_rate(instance: str, root: Path) -> tuple[float, int]:
    found = replay.load(None, None, root=root)
    streams = replay.build_streams(instance, found, None)
    t0 = time.perf_counter()
    n = replay.run(streams, None)
    dt = time.perf_counter() - t0
    for s in streams:
        s.writer.close()
    return n / dt, n


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = ap.parse_args()
    n_rec = 20_000 if args.quick else 131_072
    n_day, n_files = (500_000, 144) if args.quick else (5_000_000, 1440)
    inst = f"hbench{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "history"
        try:
            peak = ingest_peak(3)
            fill(inst, n_rec, n_rec)
            cpu_rate, wall_rate = archive_full_rings(inst, root, n_rec, n_rec)
            books_b, trades_b = size_of(root / "books"), size_of(root / "trades")
            rrate, rn = replay_rate(f"{inst}r", root)
            unlink_instance(inst)
            share = cpu_at_demo_rate(inst, Path(tmp) / "demo", 10 if args.quick else 30)
            day = Path(tmp) / "day"
            day_of_trades(day, n_day, n_files)
            f_wall, f_cpu, f_alt, _ = time_query(day, 1)
            compact_s = compact_day(day)
            q_wall, q_cpu, alt, rows = time_query(day, 3)
            c_wall, c_cpu, c_alt, _ = time_query(day, 3, ["price", "qty", "side"])
            derived = Path(tmp) / "derived"
            n_tick, n_candle = day_of_derived(derived, 20_000 if args.quick else 172_800)
            derived_q = time_derived(derived, 3)
            tick_b, candle_b = size_of(derived / "tickers"), size_of(derived / "candles_1s")
        finally:
            unlink_instance(inst)
            unlink_instance(f"{inst}r")
    print(
        f"python {sys.version.split()[0]}, pyarrow {pa.__version__}, load {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    print(f"{'measure':58s} {'value':>14s}  target / alternative")
    print(f"{'ingest peak, book records/s per core (futures tape)':58s} {peak:14,.0f}")
    ratio = cpu_rate / peak
    print(
        f"{'archiver, records/s per core (CPU time; 50% books)':58s} {cpu_rate:14,.0f}  "
        f"{ratio:.1f}x the ingest peak (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})"
    )
    print(f"{'archiver, records/s wall clock':58s} {wall_rate:14,.0f}")
    print(
        f"{'archiver CPU at the demo rate, % of a core':58s} {share:14.2f}  "
        f"target < 10: {'met' if share < 10 else 'NOT met'}"
    )
    print(
        f"{'bytes per million book records (10 levels kept)':58s} {books_b / n_rec * 1e6:14,.0f}  "
        f"ring records: {n_rec} x {L.book_dtype(20).itemsize} B"
    )
    print(f"{'bytes per million trades':58s} {trades_b / n_rec * 1e6:14,.0f}")
    print(
        f"{f'query a day of {rows:,} trades, compacted (1 file), wall s':58s} {q_wall:14.3f}  "
        f"target < 1 s: {'met' if q_wall < 1 else 'NOT met'}; CPU {q_cpu:.3f} s; "
        f"pyarrow.dataset + sort {alt:.3f} s ({alt / q_wall:.1f}x)"
    )
    print(
        f"{'  the same, columns ts, price, qty, side only, wall s':58s} {c_wall:14.3f}  "
        f"target < 1 s: {'met' if c_wall < 1 else 'NOT met'}; CPU {c_cpu:.3f} s; "
        f"pyarrow.dataset + sort {c_alt:.3f} s ({c_alt / c_wall:.1f}x)"
    )
    print(
        f"{f'  the same day before compaction ({n_files} files), wall s':58s} {f_wall:14.3f}  "
        f"CPU {f_cpu:.3f} s; pyarrow.dataset + sort {f_alt:.3f} s; compaction {compact_s:.1f} s"
    )
    print(f"{'bytes per million ticker records (every field)':58s} {tick_b / n_tick * 1e6:14,.0f}")
    print(f"{'bytes per million 1 s candle records':58s} {candle_b / n_candle * 1e6:14,.0f}")
    for kind, what in (("tickers", "ticker records"), ("candles_1s", "1 s candles, newest rev.")):
        wall, cpu, alt_s, rows = derived_q[kind]
        print(
            f"{f'query a day of {rows:,} {what}, wall s':58s} {wall:14.3f}  "
            f"target < 1 s: {'met' if wall < 1 else 'NOT met'}; CPU {cpu:.3f} s; "
            f"pyarrow.dataset + sort {alt_s:.3f} s ({alt_s / wall:.1f}x)"
        )
    print(
        f"{f'replay --max, records/s ({rn:,} records)':58s} {rrate:14,.0f}  "
        f"target >= 500,000: {'met' if rrate >= 500_000 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
