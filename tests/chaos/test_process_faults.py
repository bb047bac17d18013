"""kill -9 of every process of a running instance: a reader, ingest, the publisher, the supervisor.

Nothing hangs, no reader crashes or loses a record silently, books after every restart are
exact against the exchange's own bookTicker, and what Redis got adds up with what the rings
held. (The supervisor-level basics — restart within 2 s, refusal of a second start, no orphan
after the supervisor's kill -9 — are in tests/test_supervisor.py and not repeated here.)
"""

from __future__ import annotations

import os
import signal
import time

from test_ingest_support import RecordLog, compare_with_tickers
from test_supervisor import gone

from mdpipe.shm.segment import list_segments, read_status

from .conftest import Report
from .live import BOOKS, SYMBOLS, TRADES, Live, RedisTap, SeqReader, cursor, wait

# The readers outlive the test however slow a loaded machine makes it (closed at its end).
READER_SECONDS = 900


def _kill_reader(live: Live, readers: list[SeqReader], report: Report) -> None:
    victim = readers.pop(0)
    c0, n0 = cursor(live.instance, BOOKS), [r.n() for r in readers]
    t0 = time.monotonic()
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait()
    wait(lambda: cursor(live.instance, BOOKS) > c0 + 200, 10, "the writer to go on")
    wait(lambda: all(r.n() > n for r, n in zip(readers, n0, strict=True)), 10, "other readers")
    fresh = SeqReader(live.instance, READER_SECONDS)
    wait(lambda: fresh.n() > 0, 20, "a new reader's first records")
    readers.append(fresh)
    report(
        "kill -9 of a reader process",
        "writer and other readers unaffected; a new reader attaches",
        time.monotonic() - t0,
        "nothing",
    )


def _kill_ingest(live: Live, readers: list[SeqReader], report: Report) -> None:
    old = read_status(live.instance, BOOKS)
    os.kill(old.writer_pid, signal.SIGKILL)
    t0 = time.monotonic()

    def back() -> bool:
        st = read_status(live.instance, BOOKS)
        return st.writer_alive and st.writer_pid != old.writer_pid

    wait(back, 15, "a new ingest process")
    live.wait_synced("every book resynced after the ingest's kill -9", 30)
    took = time.monotonic() - t0
    gen = old.generation + 1
    n0 = [r.n() for r in readers]
    wait(
        lambda: all(
            r.latest()["generation"] == gen and r.n() > n + 50
            for r, n in zip(readers, n0, strict=True)
        ),
        20,
        "every reader to follow the new ingest process",
    )
    comparable, rebuilds = live.check_exact()
    assert rebuilds >= 2 * len(SYMBOLS)
    report(
        "kill -9 of the ingest process",
        f"restarted, {len(SYMBOLS)} books resynced (RESYNC flag), readers followed; "
        f"{comparable} synced records checked against the exchange",
        took,
        "frames in flight on the dead sockets (books rebuilt from a snapshot)",
    )


def _kill_publisher(live: Live, tap: RedisTap, report: Report) -> None:
    old = read_status(live.instance, "publisher")
    seen = len(tap.trades)
    os.kill(old.writer_pid, signal.SIGKILL)

    def back() -> bool:
        st = read_status(live.instance, "publisher")
        return (
            st.writer_alive
            and st.writer_pid != old.writer_pid
            and st.counters.get("g_redis_up") == 1
            and len(tap.trades) > seen + 20
        )

    took = wait(back, 20, "a new publisher publishing again")
    accounts = live.accounts(tap)
    # Every trade of the rings, from the first Redis got to where everything stood still,
    # is in Redis; some maybe twice (the batch in flight at the kill).
    trades = live.trades.drain()[accounts.first_trade : accounts.trades_end]
    ring = {(SYMBOLS[int(t["symbol_id"])], int(t["trade_id"])) for t in trades}
    missing = ring - set(tap.trades)
    twice = len(tap.trades) - len(set(tap.trades))
    report(
        "kill -9 of the publisher",
        "restarted by the supervisor; resumes at its saved ring position; "
        f"rings held/counted: {accounts}",
        took,
        f"nothing ({twice} trades sent twice: the batch in flight)",
    )
    assert tap.resubscribed == 0, "the test's subscriber missed messages"
    assert not missing, f"{len(missing)} trades never reached Redis"
    assert accounts.books[0] <= accounts.books[1] <= accounts.books[0] + 512, accounts
    assert accounts.trades[0] <= accounts.trades[1] <= accounts.trades[0] + 512, accounts


def test_kill9_of_every_process(instance, redis_server, tmp_path, report: Report) -> None:
    tap = RedisTap(redis_server.url).start()
    live = Live(instance, redis_server.url, tmp_path)
    readers: list[SeqReader] = []
    try:
        live.start()
        readers += [SeqReader(instance, READER_SECONDS) for _ in range(3)]
        wait(lambda: all(r.n() > 0 for r in readers), 20, "the readers' first records")

        _kill_reader(live, readers, report)
        _kill_ingest(live, readers, report)
        _kill_publisher(live, tap, report)

        # The supervisor: its children die with it; a new start reclaims and runs exactly.
        pids = live.run.pids()
        os.kill(pids["supervisor"], signal.SIGKILL)
        t0 = time.monotonic()
        live.run.proc.wait()
        for name, pid in pids.items():
            wait(lambda pid=pid: gone(pid), 15, f"{name} (pid {pid}) to exit")
        assert list_segments(instance)
        live.tickers.tickers.clear()  # the new simulator starts its market over
        for log in (live.books, live.trades):
            log.close()
        live.books = live.trades = None
        live.run.start().wait_ready(60)
        live.wait_synced("the new instance synced")
        took = time.monotonic() - t0
        assert "reclaimed" in live.run.log()
        live.books = RecordLog(instance, BOOKS, "book")
        live.trades = RecordLog(instance, TRADES, "trade")
        n0 = [r.n() for r in readers]
        wait(
            lambda: all(r.n() > n + 100 for r, n in zip(readers, n0, strict=True)),
            30,
            "every reader to follow the new instance",
        )
        # The collector's tickers come on their own connection: wait for those to compare.
        wait(
            lambda: compare_with_tickers(live.books.drain(), SYMBOLS, live.tickers.tickers)[0] > 50,
            30,
            "50 records comparable with the new simulator's tickers",
        )
        comparable, _ = live.check_exact()
        assert comparable > 50
        report(
            "kill -9 of the supervisor",
            "children exit at once (PDEATHSIG); a new start reclaims the segments and the "
            "lock; readers attached before follow the new rings",
            took,
            "nothing in the rings; a reader skips nothing it is not told about",
        )
        for r in readers:
            got = r.latest()
            assert r.proc.poll() is None, "a reader crashed"
            assert got["skipped"] == got["lost"] == 0, got
    finally:
        for r in readers:
            r.close()
        tap.stop()
        live.close()
