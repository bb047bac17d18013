"""`mdpipe subscribe|unsubscribe` against a live ingest shard and the simulator: the symbol
tables grow, the new books sync, a removed book is unpublished, and the other books never
notice (symbol_seq continues, no resync). Bad input changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_ingest_support import (
    IngestProcess,
    RecordLog,
    check_continuity,
    synced_in_ring,
    write_sim_config,
)

from mdpipe.shm import layout as L
from mdpipe.sim.instruments import universe
from mdpipe.sim.process import SimProcess

SYMBOLS = universe(12)
STARTED, ADDED, REMOVED = SYMBOLS[:8], SYMBOLS[8:10], SYMBOLS[3]


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime directory with a short path (Unix socket paths are at most 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="mdrt", dir="/tmp") as d:
        path = Path(d) / "rt"
        monkeypatch.setenv("MDPIPE_RUNTIME_DIR", str(path))
        yield path


def mdpipe(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mdpipe.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=os.environ.copy())


def _listed(instance: str) -> list[str]:
    from mdpipe.ingest.control import call, socket_path

    return call(socket_path(instance, "f", 0), "list", [])["symbols"]


def test_subscribe_and_unsubscribe_leave_the_other_books_alone(
    tmp_path: Path, instance: str, runtime_dir: Path
) -> None:
    with SimProcess(["--universe", "12", "--rate", "400"]) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market="futures",
            symbols=STARTED,
            depth_stream="depth@100ms",
            trade_stream="aggTrade",
        )
        with IngestProcess(cfg, instance) as ingest:
            ingest.wait_running()
            ingest.wait_for("8 books synced", lambda c: c["g_books_synced"] == 8, timeout=60)
            books = RecordLog(instance, ingest.books_ring, "book")
            trades = RecordLog(instance, ingest.trades_ring, "trade")
            assert books.reader.symbols == STARTED

            r = mdpipe("subscribe", *ADDED, "--instance", instance)
            assert r.returncode == 0, r.stderr
            assert r.stdout.strip() == (
                f"subscribed {' '.join(ADDED)} on feed f shard 0 (instance {instance})"
            )
            # Synced in the ring too: the gauge counts a book a moment before its first record.
            ingest.wait_for(
                "10 books synced",
                lambda c: (
                    c["g_books_synced"] == 10 and synced_in_ring(books, STARTED + ADDED) == 10
                ),
                timeout=60,
            )
            # Readers attached before see the new symbols, at the next ids: by name, and in
            # the records they stream.
            assert books.reader.top(ADDED[0]) is not None
            assert books.reader.symbols == STARTED + ADDED
            ingest.wait_for("trades", lambda c: c["trades"] > 0, timeout=30)
            books.drain()
            trades.drain()
            assert trades.reader.symbols[: len(STARTED)] == STARTED

            r = mdpipe("unsubscribe", REMOVED, "--instance", instance)
            assert r.returncode == 0, r.stderr
            ingest.wait_for(
                "the removed book unpublished",
                lambda c: c["g_books_total"] == 9 and c["g_books_synced"] == 9,
                timeout=30,
            )
            assert _listed(instance) == sorted(set(STARTED + ADDED) - {REMOVED})
            # Ids are never renumbered: the table keeps the removed symbol's row.
            assert books.reader.symbols == STARTED + ADDED
            n_before = len(books.drain())
            ingest.wait_for("more records", lambda c: c["book_records"] > n_before + 200, 60)
            recs = books.drain()
            trade_recs = trades.drain()
            c = ingest.counters()
            assert ingest.stop() == 0

    assert c["resyncs"] == 0 and c["gaps"] == 0 and c["parse_errors"] == 0
    assert c["stream_faults"] == 0 and c["reconnects"] == 0
    assert c["subscribed"] == 2 and c["unsubscribed"] == 1
    # Each book was rebuilt once (its first sync) and never again.
    assert check_continuity(recs, futures=True) == 10
    ids = {s: i for i, s in enumerate(STARTED + ADDED)}
    for sym in STARTED + ADDED:
        mine = recs[recs["symbol_id"] == ids[sym]]
        seq = mine["symbol_seq"].astype(np.int64)
        assert (np.diff(seq) == 1).all(), f"{sym}: symbol_seq not continuous"
        if sym == REMOVED:
            # The last record says the book is not exact any more; nothing follows it.
            assert int(mine["flags"][-1]) == 0
            assert (mine["flags"][:-1] & L.FLAG_SYNCED).all()
        else:
            # The close at stop unpublishes every book: the one record before it is synced.
            assert (mine["flags"][:-1] & L.FLAG_SYNCED).all()
            assert int((mine["flags"] & L.FLAG_RESYNC != 0).sum()) == 1
    assert set(np.unique(trade_recs["symbol_id"])) >= {ids[s] for s in ADDED}


def test_bad_input_gets_one_line_and_changes_nothing(
    tmp_path: Path, instance: str, runtime_dir: Path
) -> None:
    with SimProcess(["--universe", "4", "--rate", "100"]) as sim:
        cfg = write_sim_config(
            tmp_path,
            instance,
            sim,
            market="futures",
            symbols=SYMBOLS[:2],
        )
        with IngestProcess(cfg, instance) as ingest:
            ingest.wait_running()
            ingest.wait_for("2 books synced", lambda c: c["g_books_synced"] == 2, timeout=60)
            before = _listed(instance)
            cases = [
                (
                    ["subscribe", "NOPEUSDT"],
                    2,
                    "the exchange does not list NOPEUSDT",
                ),
                (
                    ["subscribe", SYMBOLS[2], "btcusdt"],
                    2,
                    "'btcusdt' is not an upper-case Binance symbol like BTCUSDT",
                ),
                (
                    ["subscribe", SYMBOLS[0]],
                    1,
                    f"already subscribed on feed 'f': {SYMBOLS[0]} (shard 0)",
                ),
                (
                    ["subscribe", SYMBOLS[2], "--feed", "g"],
                    2,
                    f"unknown feed 'g' (instance '{instance}' has: f)",
                ),
                (["unsubscribe", SYMBOLS[3]], 2, f"not subscribed on feed 'f': {SYMBOLS[3]}"),
                (
                    ["subscribe", SYMBOLS[2], "--instance", "absent"],
                    1,
                    f"instance 'absent' has no control socket in {runtime_dir} (is it running?)",
                ),
            ]
            for args, code, message in cases:
                command = args[0]
                if "--instance" not in args:
                    args = [*args, "--instance", instance]
                r = mdpipe(*args)
                assert (r.returncode, r.stderr, r.stdout) == (
                    code,
                    f"mdpipe {command}: {message}\n",
                    "",
                ), args
            assert _listed(instance) == before
            c = ingest.counters()
            assert c["g_books_total"] == 2 and c["g_books_synced"] == 2 and c["resyncs"] == 0
            # A stale socket file nobody listens on: unreachable, one line.
            ingest.stop()
    stale = runtime_dir / f"mdpipe.{instance}.f.0.ctl"
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    r = mdpipe("subscribe", SYMBOLS[2], "--instance", instance)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"mdpipe subscribe: cannot reach {stale}:")


def test_control_socket_refuses_files_that_are_not_its_own(runtime_dir: Path) -> None:
    """A planted regular file or link where a control socket goes is refused, never used."""
    from mdpipe.ingest.control import ControlError, ControlServer, call, socket_path
    from mdpipe.ingest.inbox import Inbox

    path = socket_path("planted", "f", 0)
    path.write_text("not a socket")
    inbox = Inbox()
    with pytest.raises(ControlError, match="is not a control socket of ours"):
        ControlServer(path, inbox, lambda op, symbols: None)
    with pytest.raises(ControlError, match="is not a control socket of ours"):
        call(path, "list", [])
    assert path.read_text() == "not a socket"  # left alone
    link = socket_path("planted", "f", 1)
    link.symlink_to(path)
    with pytest.raises(ControlError, match="is not a control socket of ours"):
        ControlServer(link, inbox, lambda op, symbols: None)
    inbox.close()
    # A live server answers its own user, one JSON line each way.
    server = ControlServer(
        socket_path("planted", "f", 2), Inbox(), lambda op, symbols: ("no", True)
    )
    try:
        assert oct(server.path.stat().st_mode & 0o777) == "0o600"
        assert call(server.path, "subscribe", ["X"]) == {"ok": False, "error": "no", "usage": True}
        assert (
            call(server.path, "bogus", [])["error"]
            == "op must be one of subscribe, unsubscribe, list"
        )
    finally:
        server.close()
        inbox.close()
    assert not server.path.exists()
