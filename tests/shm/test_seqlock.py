"""The seqlock primitive on both paths: the C extension and the pure-Python fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mdpipe.shm import layout as L
from mdpipe.shm import seqlock

PATHS = ["c", "python"]


def test_the_c_extension_is_built() -> None:
    """`make setup` builds it; without it every read and commit pays the Python path."""
    if os.environ.get("MDPIPE_SEQLOCK") == "python":
        assert seqlock.IMPLEMENTATION == "python"
    else:
        assert seqlock.IMPLEMENTATION == "c"


def _impl(path: str) -> tuple[type, type, type]:
    if path == "c":
        from mdpipe.shm import _seqlock

        return _seqlock.Writer, _seqlock.Cursor, _seqlock.Latest
    return seqlock.PyWriter, seqlock.PyCursor, seqlock.PyLatest


def _records_impl(path: str) -> type:
    if path == "c":
        from mdpipe.shm import _seqlock

        return _seqlock.Records
    return seqlock.PyRecords


@pytest.mark.parametrize("path", PATHS)
def test_commit_stream_latest_and_top_agree_on_both_paths(path: str) -> None:
    Writer, Cursor, Latest = _impl(path)
    depth, cap, syms = 4, 8, 2
    geo = L.segment_geometry(L.KIND_BOOK, cap, depth, syms)
    seg = bytearray(geo["segment_size"])
    dtype = L.book_dtype(depth)
    stage = np.zeros(1, dtype)
    w = Writer(
        seg, stage, geo["slots_offset"], geo["latest_offset"], geo["slot_size"], cap,
        dtype.itemsize, syms, dtype.fields["symbol_seq"][1], dtype.fields["commit_ts_ns"][1], 0,
    )  # fmt: skip
    out = np.zeros(1, dtype)
    c = Cursor(seg, out, geo["slots_offset"], geo["slot_size"], cap, dtype.itemsize, 0)
    latest = Latest(seg)
    assert c.poll() == 0
    for k in range(3):
        stage["bids"][0, 0] = (100 + k, 1)
        stage["asks"][0, 0] = (101 + k, 2)
        assert w.commit_book(k % 2, L.FLAG_SYNCED, 10 + k, 20 + k, k, k, max(k - 1, 0), 1, 1) == k
    assert w.cursor == 3
    got = []
    while c.poll() == 1:
        got.append(
            (int(out["last_update_id"][0]), int(out["symbol_id"][0]), int(out["symbol_seq"][0]))
        )
    assert got == [(0, 0, 1), (1, 1, 1), (2, 0, 2)]
    assert c.next == 3 and c.wait(10) == 0
    off = geo["latest_offset"]
    assert latest.top(off, L.BOOK_LEVELS_OFFSET + 16 * depth) == (102.0, 1.0, 103.0, 2.0)
    rec = np.zeros(1, dtype)
    assert latest.read(off, rec, ((0, dtype.itemsize),)) == 4  # symbol_seq 2 -> seq 4
    assert rec["last_update_id"][0] == 2
    # Lapped: message 0's slot now holds message 8.
    for k in range(3, 9):
        w.commit_book(0, 0, 0, 0, k, k, 0, 0, 0)
    c.next = 0
    assert c.poll() == 2
    many = np.zeros(4, dtype)
    c.next = 5
    count, lapped = c.read_many(many, 4)
    assert (count, lapped) == (4, False) and list(many["last_update_id"]) == [5, 6, 7, 8]
    for obj in (w, c, latest):
        obj.release()


@pytest.mark.parametrize("path", PATHS)
def test_records_iterates_and_calls_back_when_empty_lapped_or_replaced(path: str) -> None:
    """The iterator behind `for rec in reader`: records in order, then on_idle(0, -1) when
    empty or on_idle(2, i) when cursor i was lapped; parts it returns replace the old ones."""
    Writer, Cursor, _ = _impl(path)
    Records = _records_impl(path)
    depth, cap = 1, 4
    geo = L.segment_geometry(L.KIND_BOOK, cap, depth, 1)
    dtype = L.book_dtype(depth)

    def ring() -> tuple[object, object, np.ndarray]:
        seg = bytearray(geo["segment_size"])
        stage = np.zeros(1, dtype)
        w = Writer(
            seg, stage, geo["slots_offset"], geo["latest_offset"], geo["slot_size"], cap,
            dtype.itemsize, 1, dtype.fields["symbol_seq"][1], dtype.fields["commit_ts_ns"][1], 0,
        )  # fmt: skip
        out = np.zeros(1, dtype)
        return (
            w,
            Cursor(seg, out, geo["slots_offset"], geo["slot_size"], cap, dtype.itemsize, 0),
            out,
        )

    w1, c1, out1 = ring()
    w2, c2, out2 = ring()
    calls: list[tuple[int, int]] = []
    script = iter(["commit", "lap", "skip", "swap", "stop"])

    def on_idle(result: int, index: int) -> list[tuple[object, object]] | None:
        calls.append((result, index))
        step = next(script)
        if step == "commit":
            w1.commit_book(0, 0, 0, 0, 7, 7, 0, 0, 0)
        elif step == "lap":
            for k in range(8, 14):  # messages 3..8 into 4 slots: 3 and 4 are overwritten
                w1.commit_book(0, 0, 0, 0, k, k, 0, 0, 0)
        elif step == "skip":
            c1.next = 5  # what the reader's skip_lapped does
        elif step == "swap":
            w2.commit_book(0, 0, 0, 0, 99, 99, 0, 0, 0)
            return [(c2, out2[0])]
        else:
            raise StopIteration
        return None

    bases = np.zeros(1, np.uint32)
    for k in range(2):
        w1.commit_book(0, 0, 0, 0, k, k, 0, 0, 0)
    got = [int(rec["last_update_id"]) for rec in Records([(c1, out1[0])], bases, 3, on_idle)]
    assert got == [0, 1, 7, 10, 11, 12, 13, 99]
    assert calls == [(0, -1), (0, -1), (2, 0), (0, -1), (0, -1)]

    # Two cursors in turn, the second's symbol ids offset by its base (read at every record,
    # so the reader may renumber while iterating).
    c1.next, c2.next = 5, 0
    w2.commit_book(0, 0, 0, 0, 100, 100, 0, 0, 0)
    bases = np.array([0, 10], np.uint32)
    it = Records([(c1, out1[0]), (c2, out2[0])], bases, 0, on_idle)
    seen = []
    for rec in it:
        seen.append((int(rec["last_update_id"]), int(rec["symbol_id"])))
        if len(seen) == 2:
            bases[1] = 20
        if len(seen) == 6:
            break
    assert seen == [(10, 0), (99, 10), (11, 0), (100, 20), (12, 0), (13, 0)]
    c2.release()
    script = iter(["stop"])
    assert list(Records([(c2, out2[0])], bases, 3, on_idle)) == []  # released: ends at once
    with pytest.raises(ValueError):
        Records([(c1, out1[0])], bases, -1, on_idle)
    with pytest.raises(ValueError):
        Records([(c1, out1[0])] * 3, bases, 0, on_idle)  # more parts than bases
    for obj in (w1, c1, w2):
        obj.release()


_STRESS = textwrap.dedent("""
    import multiprocessing as mp, os, sys
    from mdpipe.shm import seqlock
    from mdpipe.shm.writer import RingWriter
    from mdpipe.readers import attach

    DEPTH = 20

    def writer(instance, stop, ready, parent):
        w = RingWriter.create(instance, "books", "book", symbols=["S"], capacity=256, depth=DEPTH)
        ready.set()
        k = 0
        # Ends with the stress run even when that was killed (a timeout must not leave it spinning).
        while not stop.is_set() and (k & 4095 or os.getppid() == parent):
            # Every level is a function of k: any mix of two records is detectable.
            w.bids[:, 0] = k; w.bids[:, 1] = k + 0.5; w.asks[:, 0] = k + 1; w.asks[:, 1] = k + 1.5
            w.commit_book(0, 1, k, 0, k, k, 0, DEPTH, DEPTH)
            k += 1
        w.close()

    def torn(buf):
        # Words of the book record (docs/layout.md): 5 first_update_id, 6 last_update_id,
        # 10 bids[0].price, 10 + 2 * DEPTH - 1 bids[-1].qty, 10 + 4 * DEPTH - 1 asks[-1].qty.
        u = memoryview(buf).cast("B").cast("Q")
        f = memoryview(buf).cast("B").cast("d")
        last_bid, last_ask = 10 + 2 * DEPTH - 1, 10 + 4 * DEPTH - 1
        def check():
            k = u[6]
            return u[5] != k or f[10] != k or f[last_bid] != k + 0.5 or f[last_ask] != k + 1.5
        return check, u

    if __name__ == "__main__":
        instance, reads_wanted = sys.argv[1], int(sys.argv[2])
        ctx = mp.get_context("spawn")
        stop, ready = ctx.Event(), ctx.Event()
        p = ctx.Process(target=writer, args=(instance, stop, ready, os.getpid()))
        p.start()
        assert ready.wait(60)
        r = attach(instance, "books")
        part = r._parts[0]
        is_torn, u = torn(part.cursor.buf)
        latest_torn_check, _ = torn(part.view.buf)
        reads = accepted = n_torn = latest_torn = 0
        last = -1
        ordered = True
        while reads < reads_wanted:
            rec = r.poll()
            reads += 1
            if rec is not None:
                accepted += 1
                n_torn += is_torn()
                k = u[6]
                ordered &= k > last
                last = k
            if reads & 63 == 0 and r.latest("S") is not None:
                reads += 1
                latest_torn += latest_torn_check()
        stop.set()
        p.join(60)
        print(seqlock.IMPLEMENTATION, reads, accepted, n_torn, latest_torn, r.lost, int(ordered))
""")


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("path", PATHS)
def test_torn_read_stress_ten_million_reads(path: str, instance: str, tmp_path) -> None:
    """>= 10 M reads against a writer committing as fast as it can: 0 torn records accepted."""
    script = tmp_path / "stress.py"
    script.write_text(_STRESS)
    env = dict(os.environ, MDPIPE_SEQLOCK=path)
    proc = subprocess.run(
        [sys.executable, str(script), instance, "10000000"],
        capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    impl, reads, accepted, torn, latest_torn, lost, ordered = proc.stdout.split()
    print(proc.stdout)
    assert impl == path
    assert int(reads) >= 10_000_000
    assert int(accepted) > 100_000
    assert (int(torn), int(latest_torn), int(ordered)) == (0, 0, 1)
