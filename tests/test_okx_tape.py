"""The OKX tape (legacy form: checksums, some updates without seqId) replayed by
`mdpipe sim --venue okx --tape` into `mdpipe start`: records are flagged exact only where the
checksum chain holds.

The committed tape is the simulator's market (no real OKX recording exists here; see
data/tapes/README.md). A copy with a few level sizes altered shows those books flagged not
exact at once and rebuilt from the tape's next snapshot, never published as exact meanwhile.
"""

from __future__ import annotations

import gzip
import subprocess
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from test_ingest_okx import check_chain, compare_with_bbo
from test_ingest_support import CORE, RecordLog, check_record_invariants
from test_supervisor import PY, REPO, mdpipe

from mdpipe.shm import layout as L
from mdpipe.shm.segment import read_status
from mdpipe.sim.process import SimProcess
from mdpipe.sim.venues._okx.record import synthetic_tape
from mdpipe.sim.venues._okx.tape import TapeBook
from mdpipe.venues.okx.checksum import CHECKSUM_LEVELS

TAPE = REPO / "data" / "tapes" / "okx_swap_legacy_synthetic.gz"
SYMBOLS = ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]
Top = tuple[float, float, float, float]


def read_lines(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as f:
        return [line.rstrip(b"\n") for line in f if line.strip()]


def tape_facts(lines: list[bytes]) -> tuple[int, int, dict[tuple[str, int], Top]]:
    """(books updates, trades, bbo-tbt tops by (instId, seqId)) of a tape."""
    updates = trades = 0
    tops: dict[tuple[str, int], Top] = {}
    for line in lines:
        msg = orjson.loads(line.partition(b" ")[2])
        channel = msg["arg"]["channel"]
        if channel == "books" and msg["action"] == "update":
            updates += 1
        elif channel == "trades":
            trades += 1
        elif channel == "bbo-tbt":
            d = msg["data"][0]
            (bp, bq, *_), (ap, aq, *_) = d["bids"][0], d["asks"][0]
            tops[(msg["arg"]["instId"], d["seqId"])] = (float(bp), float(bq), float(ap), float(aq))
    return updates, trades, tops


def corrupt(lines: list[bytes], per_symbol: int) -> tuple[list[bytes], set[tuple[str, int]]]:
    """Alter one size among the top 25 levels in `per_symbol` updates of each instrument, one
    per snapshot interval; returns the tape and the (instId, seqId) of the altered updates."""
    out = list(lines)
    books = {s: TapeBook() for s in SYMBOLS}
    done: dict[str, int] = dict.fromkeys(SYMBOLS, 0)
    armed = dict.fromkeys(SYMBOLS, False)
    altered: set[tuple[str, int]] = set()
    for i, line in enumerate(lines):
        stamp, _, raw = line.partition(b" ")
        msg = orjson.loads(raw)
        if msg["arg"]["channel"] != "books":
            continue
        inst = msg["arg"]["instId"]
        d = msg["data"][0]
        if msg["action"] == "snapshot":
            armed[inst] = done[inst] < per_symbol
        elif armed[inst] and d.get("seqId"):
            top = {p for p, *_ in books[inst].levels(CHECKSUM_LEVELS)[0]}
            for level in d["bids"]:
                if level[0] in top and level[1] != "0":
                    level[1] += "1"  # "30.45" -> "30.451": another size, still a number
                    out[i] = stamp + b" " + orjson.dumps(msg)
                    altered.add((inst, d["seqId"]))
                    done[inst] += 1
                    armed[inst] = False
                    break
        books[inst].apply(orjson.loads(raw))
    assert all(n == per_symbol for n in done.values()), done
    return out, altered


def start_pipeline(tmp: Path, instance: str, sim: SimProcess) -> subprocess.Popen[bytes]:
    """`mdpipe start` with one OKX feed on the simulator (no Redis, no HTTP: rings only)."""
    cfg = tmp / "okx.toml"
    cfg.write_text(
        f"""
instance = "{instance}"
[shm]
book_capacity = 65536
trade_capacity = 65536
[[feeds]]
name = "okx"
exchange = "okx"
market = "swap"
ws_url = "{sim.ws_url}"
rest_url = "{sim.rest_url}"
symbols = {orjson.dumps(SYMBOLS).decode()}
cores = [{CORE}]
reconnect_initial = 0.05
reconnect_max = 0.5
# A loaded test machine may stall a process for seconds: never mistake that for a dead feed.
silence_timeout = 60.0
[publisher]
enabled = false
[http]
enabled = false
[supervisor]
dead_letter_dir = "{tmp / "dead"}"
"""
    )
    log = open(tmp / "start.log", "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [PY, "-m", "mdpipe.cli", "start", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )


def bytes_in_flight(port: int) -> int:
    """Bytes sent on this machine's TCP connections to or from `port` and not yet read."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        ports = {int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)}
        if port in ports:
            total += sum(int(q, 16) for q in fields[4].split(":"))
    return total


def replay(tmp: Path, instance: str, tape: Path) -> tuple[dict[str, int], np.ndarray]:
    """Replay the whole tape through `mdpipe start`; (ingest counters, book records).

    Done when the simulator has sent the last line and the ingest has taken every frame it
    was sent (a resubscribe may miss the lines replayed between its two requests): nothing
    left in the sockets, and its frame count still over half a second (a loaded machine can
    leave it unscheduled that long with frames waiting)."""
    with SimProcess(["--venue", "okx", "--tape", str(tape), "--max"]) as sim:
        proc = start_pipeline(tmp, instance, sim)
        try:
            books = RecordLog(instance, "books.okx.0", "book")

            def log_text() -> str:
                return (tmp / "start.log").read_text(errors="replace")[-4000:]

            deadline = time.monotonic() + 180
            settled = None
            while True:
                assert proc.poll() is None, log_text()
                assert time.monotonic() < deadline, f"tape not consumed:\n{log_text()}"
                books.drain()
                stats = sim.stats()
                sent = stats["messages"]["total"] + stats["requests"].get("subscribe", 0)
                c = read_status(instance, "books.okx.0").counters
                now = (stats["source"]["finished"], sent, c["frames"])
                if now[0] and now == settled and not bytes_in_flight(sim.port):
                    break
                settled = now
                time.sleep(0.5)
            assert read_status(instance, "books.okx.0").exchange == "okx-swap"
            records = books.drain()
            books.close()
            stop = mdpipe("stop", "--instance", instance)
            assert stop.returncode == 0, stop.stderr
            proc.wait(30)
            assert proc.returncode == 0, log_text()
            return c, records
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_committed_tape_is_what_the_generator_makes() -> None:
    lines = read_lines(TAPE)
    assert lines == synthetic_tape(SYMBOLS, 40.0, 150.0, 1)
    books = [orjson.loads(line.partition(b" ")[2]) for line in lines if b'"books"' in line[:60]]
    data = [m["data"][0] for m in books]
    assert all(d["checksum"] != 0 for d in data), "legacy data carries checksums"
    assert sum("seqId" not in d for d in data) >= 20, "and some messages without seqId"


def test_tape_records_are_exact_where_the_checksum_chain_holds(tmp_path, instance) -> None:
    counters, records = replay(tmp_path, instance, TAPE)
    updates, trades, tops = tape_facts(read_lines(TAPE))
    assert counters["depth_diffs"] == updates and counters["trades"] == trades, counters
    assert counters["gaps"] == 0 and counters["parse_errors"] == 0, counters
    # A later snapshot replaces a book when it follows an update without seqId (the book's
    # seqId is unknown then); that is the only kind of rebuild here.
    resets = counters.get("snapshot_resets", 0)
    assert counters["resyncs"] == resets
    check_record_invariants(records, depth=20)
    assert check_chain(records) == len(SYMBOLS) + resets
    synced = records[(records["flags"] & L.FLAG_SYNCED) != 0]
    assert len(synced) >= 700
    comparable, wrong = compare_with_bbo(records, SYMBOLS, tops)
    assert not wrong, f"{len(wrong)} of {comparable} records disagree: {wrong[:5]}"
    assert comparable >= 100


@pytest.mark.parametrize("per_symbol", [2])
def test_corrupted_levels_are_never_published_as_exact(tmp_path, instance, per_symbol) -> None:
    lines, altered = corrupt(read_lines(TAPE), per_symbol)
    bad_tape = tmp_path / "corrupted.gz"
    with gzip.open(bad_tape, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    counters, records = replay(tmp_path, instance, bad_tape)
    # Each altered update breaks its book at once: counted, flagged, rebuilt.
    resets = counters.get("snapshot_resets", 0)
    assert counters["reconnects"] == 0, counters
    assert counters["gaps"] == len(altered), (counters, sorted(altered))
    assert counters["resyncs"] == len(altered) + resets, counters
    check_record_invariants(records, depth=20)
    assert check_chain(records) == len(SYMBOLS) + len(altered) + resets
    for sid, sym in enumerate(SYMBOLS):
        mine = records[records["symbol_id"] == sid]
        exact = {int(r["last_update_id"]) for r in mine if r["flags"] & L.FLAG_SYNCED}
        assert not exact & {seq for s, seq in altered if s == sym}, "an altered book published"
        assert (mine["flags"] == 0).sum() == per_symbol, "each break said the book went stale"
    _, _, tops = tape_facts(lines)
    comparable, wrong = compare_with_bbo(records, SYMBOLS, tops)
    assert not wrong, f"{len(wrong)} of {comparable} records disagree: {wrong[:5]}"
    assert comparable >= 50
