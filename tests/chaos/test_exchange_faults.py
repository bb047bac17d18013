"""Exchange faults through the simulator of a running instance, one after another.

A disconnect storm, a sequence gap on every symbol, a silent feed, a serverShutdown event,
malformed frames and REST 500/429/451/slow answers. After each the books resync; the
counters account for each fault; and no record flagged SYNCED — in the rings or in Redis —
ever disagrees with the exchange. (Each fault alone against a bare ingest process:
tests/test_ingest_faults.py.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from test_ingest_support import unread_bytes

from mdpipe.shm.segment import read_status

from .conftest import Report
from .live import BOOKS, SYMBOLS, Live, RedisTap, wait

STORM = 10
SILENCE_TIMEOUT = 2.5


def _delta(before: dict[str, int], after: dict[str, int], *keys: str) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


def test_exchange_faults_on_a_live_instance(instance, redis_server, tmp_path, report: Report):
    tap = RedisTap(redis_server.url).start()
    # Every count covers the depth, trade and ticker connections alike.
    sets = (f"feeds.0.silence_timeout={SILENCE_TIMEOUT}", "feeds.0.reconnect_max=2.0")
    live = Live(instance, redis_server.url, tmp_path, sets=sets)
    n = len(SYMBOLS)
    try:
        live.start()

        def fault(
            name: str,
            inject: list[dict],
            expect: dict[str, int] | Callable[[list[dict]], dict[str, int]],
            lost: str,
        ) -> dict:
            """Inject, wait for every book to be synced with the counters grown, report.

            `expect` may be computed from the simulator's answers (what it actually did).
            """
            # Every connection up first: a fault sent while one is still reconnecting from the
            # previous fault would not reach it (and the counts below would wait in vain).
            deadline = time.monotonic() + 60
            while (c := live.ingest()).get("g_connections") != c.get("g_connections_expected"):
                assert time.monotonic() < deadline, (name, "connections", c)
                time.sleep(0.02)
            c0 = live.ingest()
            done = []
            for i, f in enumerate(inject):
                pause = f.pop("after", 0.0)
                if i:
                    time.sleep(pause)
                done.append(live.sim.inject(**f))
            t0 = time.monotonic()
            if callable(expect):
                expect = expect(done)

            def recovered() -> bool:
                return live.synced() and all(
                    v >= expect[k] for k, v in _delta(c0, live.ingest(), *expect).items()
                )

            deadline = time.monotonic() + 60
            while not recovered():
                assert time.monotonic() < deadline, (name, _delta(c0, live.ingest(), *expect))
                time.sleep(0.02)
            took = time.monotonic() - t0
            got = _delta(c0, live.ingest(), *expect)
            counted = ", ".join(f"{k} +{v}" for k, v in got.items())
            report(name, f"all books synced; counted {counted}", took, lost)
            return {"done": done, "got": got, "c0": c0}

        def ingest_dropped(done: list[dict]) -> int:
            """Ingest connections the simulator dropped (not the bookTicker-only collector's)."""
            return sum(
                not all(s.endswith("@bookTicker") for s in c["streams"])
                for d in done
                for c in d["clients"]
            )

        storm = [{"kind": "disconnect", "variant": ("abrupt", "close")[i % 2], "after": 0.3}
                 for i in range(STORM)]  # fmt: skip
        res = fault(
            f"disconnect storm: {STORM} disconnects 0.3 s apart",
            storm,
            lambda done: {"reconnects": ingest_dropped(done), "resyncs": n},
            "frames in flight; books rebuilt from snapshots",
        )
        # Every connection the exchange dropped is noticed and counted once, no more.
        assert res["got"]["reconnects"] == ingest_dropped(res["done"]) >= 2, res["got"]

        res = fault(
            "sequence gap on every symbol",
            [{"kind": "gap", "symbol": s} for s in SYMBOLS],
            {"gaps": n, "resyncs": n, "snapshots": n},
            "nothing (gapped book flagged unsynced until rebuilt)",
        )
        assert res["got"]["gaps"] == n
        conns = live.ingest()["g_connections_expected"]  # depth, trades and tickers routes
        assert conns == 3
        fault(
            f"silent feed for {SILENCE_TIMEOUT + 1} s",
            [{"kind": "silence", "seconds": SILENCE_TIMEOUT + 1}],
            {"silences": conns, "reconnects": conns, "resyncs": n},
            "nothing (the exchange sent nothing)",
        )
        # The old sockets have no backlog for the new ones to wait on (a loaded machine can
        # leave the ingest seconds behind the feed).
        wait(
            lambda: not unread_bytes(read_status(instance, BOOKS).writer_pid),
            30,
            "the ingest to read what it was sent",
        )
        res = fault(
            "serverShutdown event",
            # The old connection closes 10 s after the notice: room for a starved machine to
            # open and catch up the replacement (a late one is a counted resync instead).
            [{"kind": "shutdown", "seconds": 10.0}],
            {"server_shutdowns": conns, "rollovers": conns},
            "nothing (replaced before the server closed: no book rebuilt, no trade lost)",
        )
        assert (
            res["got"]["rollovers"] == conns
            and not _delta(res["c0"], live.ingest(), "resyncs")["resyncs"]
        )
        # Seven kinds on each connection, each shaped like the connection's first stream (the
        # ticker connection's as a 24hrTicker); the bookTicker collector gets its own seven.
        bad = 7 * conns
        res = fault(
            "malformed frames (7 kinds)",
            [{"kind": "malformed"}],
            {"parse_errors": bad, "dead_lettered": bad},
            "nothing (bad frames dead-lettered, books stay synced)",
        )
        assert res["got"]["parse_errors"] == res["got"]["dead_lettered"] == bad
        # Sent to the ingest's connections and (when it is connected) the collector's.
        assert res["done"][0]["connections"] >= conns
        for kind, fields, counter, k in [
            ("rest_500", {"count": 2}, "rest_5xx", 2),
            ("rest_429", {"count": 1, "retry_after": 1}, "rest_429", 1),
            ("rest_451", {"count": 2}, "rest_451", 2),
            ("rest_slow", {"count": 1, "delay": 1.5}, "snapshots", 1),
        ]:
            fault(
                f"REST {kind[5:]} on the snapshot after a gap",
                [{"kind": kind, **fields}, {"kind": "gap", "symbol": "ETHUSDT"}],
                {counter: k, "gaps": 1, "snapshots": 1},
                "nothing (the book stays unsynced until a snapshot is good)",
            )

        comparable, rebuilds = live.check_exact()
        redis_comparable, wrong = tap.wrong_books(live.tickers.tickers)
        assert not wrong, f"{len(wrong)} of {redis_comparable} Redis books disagree: {wrong[:5]}"
        assert comparable > 300 and redis_comparable > 100
        accounts = live.accounts(tap, seconds=1.5)
        assert accounts.exact, str(accounts)
        report(
            "all of the above, checked against the exchange",
            f"{comparable} ring and {redis_comparable} Redis synced books equal the exchange's "
            f"bookTicker; {rebuilds} rebuilds all flagged RESYNC; rings held/counted: {accounts}",
            None,
            "no SYNCED book ever wrong",
        )
    finally:
        tap.stop()
        live.close()
