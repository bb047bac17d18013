"""100,000 mutated exchange messages through a live ingest process over the real WebSocket.

The simulator replays the recorded futures tape; tests/chaos/wsproxy.py relays it to a real
`python -m mdpipe.ingest` and slips four bad frames after every real one: real messages of
the tape mutated by tests/chaos/mutate.py, kept only when the feed parser refuses them (the
parser alone is fuzzed in test_fuzz_parser.py). The process survives; every bad frame is
counted and kept byte for byte in the dead-letter file; every good message is
still applied: every diff and trade arrives, and every synced book equals the tape's own
bookTicker.
"""

from __future__ import annotations

import base64
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
from conftest import remove_segments
from test_ingest_support import (
    IngestProcess,
    RecordLog,
    check_continuity,
    check_record_invariants,
    compare_with_tickers,
    tape_book_tickers,
    write_config,
)
from test_ingest_tapes import tape_events

from mdpipe import config
from mdpipe.ingest.shard import dead_letter_path
from mdpipe.sim.process import SimProcess
from mdpipe.venues.binance.wire import BinanceParser, FeedError
from mdpipe.venues.tapes import FUTURES_TAPE, is_snapshot, read_tape

from .conftest import Report
from .mutate import mutate
from .wsproxy import MutatingProxy

BAD = 100_000
PER_MESSAGE = 4  # bad frames after each real one: the tape's 27,864 real ones carry them all
SPEED = 25  # the 345 s tape in about 14 s


def bad_frames(tape: Path, n: int, seed: int = 20240808) -> tuple[list[bytes], list[str]]:
    """n mutated tape messages the futures parser refuses, and the refusal kind of each."""
    corpus = [raw for _, raw in read_tape(tape) if not is_snapshot(raw)]
    parser = BinanceParser("futures")
    rng = random.Random(seed)
    frames, kinds = [], []
    while len(frames) < n:
        _, raw = mutate(rng, rng.choice(corpus), max_bytes=64 * 1024)
        try:
            parser.parse(raw)
        except FeedError as exc:
            frames.append(raw)
            kinds.append(exc.kind)
    return frames, kinds


def dead_lettered(path: Path) -> list[dict]:
    """Every line of a dead-letter file and its rotated predecessor, oldest first."""
    lines = []
    for p in (path.with_name(path.name + ".1"), path):
        if p.exists():
            lines += [orjson.loads(line) for line in p.read_bytes().splitlines()]
    return lines


def raw_bytes(line: dict) -> bytes:
    """The frame a dead-letter line keeps."""
    return base64.b64decode(line["raw_b64"]) if "raw_b64" in line else line["raw"].encode()


def test_100k_bad_frames_through_a_live_ingest(tmp_path, instance, tapes, report: Report):
    tape = tapes / FUTURES_TAPE
    diffs, trades = tape_events(tape)
    frames, kinds = bad_frames(tape, BAD)
    assert PER_MESSAGE * (diffs + len(trades)) >= BAD
    # Not about slow consumers either: a starved ingest behind the proxy must not be dropped
    # as one (the multi-megabyte bad frames fill the default 64 MB send buffer quickly).
    sim_args = ["--tape", str(tape), "--speed", str(SPEED), "--start-clients", "2",
                "--max-send-buffer", str(1 << 30)]  # fmt: skip
    with SimProcess(sim_args) as sim:
        proxy = MutatingProxy(sim.ws_url, frames, PER_MESSAGE).start()
        cfg = write_config(
            tmp_path / "ingest.toml",
            instance,
            ws_url=proxy.ws_url,
            rest_url=sim.rest_url,
            market="futures",
            symbols=["BTCUSDT"],
            # This test is about bad input, not silence: on a starved machine the replay can
            # pause for seconds, which must not count as a silent feed and cost a resync.
            silence_timeout=30.0,
            stream_timeout=60.0,
        )
        t0 = time.monotonic()
        try:
            with IngestProcess(cfg, instance) as ingest:
                books = RecordLog(instance, ingest.books_ring, "book")
                trade_log = RecordLog(instance, ingest.trades_ring, "trade")

                def all_in(c: dict[str, int]) -> bool:
                    books.drain()
                    trade_log.drain()
                    # parse_errors counts a bad frame before it is written to the dead letters.
                    return (
                        c["depth_diffs"] == diffs
                        and c["trades"] == len(trades)
                        and c["parse_errors"] == BAD
                        and c["dead_lettered"] >= BAD
                    )

                c = ingest.wait_for("every frame, good and bad", all_in, timeout=120)
                took = time.monotonic() - t0
                assert ingest.stop() == 0, ingest.log()[-3000:]
                records, trade_records = books.drain(), trade_log.drain()
                books.close()
                trade_log.close()
        finally:
            proxy.stop()
            remove_segments(instance)
    assert proxy.sent == BAD
    assert c["dead_lettered"] == BAD and c["gaps"] == 0 and c["resyncs"] == 0
    lines = dead_lettered(dead_letter_path(config.load(cfg, env={}), "f", 0))
    assert len(lines) == BAD
    # Both connections carried bad frames, so the file interleaves them; as a multiset it
    # holds exactly what was sent, with the refusal the parser gives each.
    kept = Counter((raw_bytes(line), line["kind"]) for line in lines)
    assert kept == Counter(zip(frames, kinds, strict=True))

    check_record_invariants(records, depth=20)
    assert check_continuity(records, futures=True) == 1  # synced once, never broken
    comparable, wrong = compare_with_tickers(records, ["BTCUSDT"], tape_book_tickers(tape))
    assert not wrong, f"{len(wrong)} of {comparable} records disagree: {wrong[:5]}"
    assert comparable >= 500
    assert (trade_records["trade_id"] == np.array([t["t"] for t in trades], np.uint64)).all()
    report(
        f"{BAD:,} mutated messages over a live WebSocket",
        f"ingest survived; {BAD:,} parse errors counted and dead-lettered byte for byte; "
        f"all {diffs:,} diffs and {len(trades):,} trades applied; {comparable} synced books "
        "equal the tape's bookTicker; no gap, no resync",
        took,
        "nothing good",
    )
