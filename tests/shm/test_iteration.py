"""`for rec in reader`: across a replaced segment, a writer gone for good, and close()."""

from __future__ import annotations

import time

import pytest
from test_ring import _start_writer

from mdpipe.readers import WriterGoneError, attach
from mdpipe.shm.writer import RingWriter


@pytest.mark.parametrize("idle", ["spin", 0.0005])
def test_iteration_goes_on_from_a_segment_the_new_writer_replaced(instance: str, idle) -> None:
    first, gen1 = _start_writer(instance, 256, 0)
    second = None
    try:
        r = attach(instance, "books", wait=True, timeout=10, idle=idle)
        seen = []
        for rec in r:
            seen.append(int(rec["last_update_id"]))
            if second is None and seen[-1] >= 5:
                first.kill()
                first.wait()
                # Another capacity: a new segment, so the reader re-maps and gets a new cursor.
                second, gen2 = _start_writer(instance, 512, 1_000_000)
                assert gen2 == gen1 + 1
            if seen[-1] >= 1_000_010:
                break
        old = [u for u in seen if u < 1_000_000]
        new = [u for u in seen if u >= 1_000_000]
        assert old == list(range(old[0], old[-1] + 1)) and new[-1] >= 1_000_010
        assert r.restarts == 1 and r.generation == gen2
        r.close()
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("rings", [1, 2])
def test_iteration_raises_when_the_writer_stays_gone(instance: str, rings: int) -> None:
    writers = [
        RingWriter.create(instance, f"books.f.{i}", "book", symbols=["S"], capacity=16)
        for i in range(rings)
    ]
    for w in writers:
        w.commit_book(0, 1, 0, 0, 1, 1, 0, 0, 0)
    r = attach(instance, "books")
    r.seek_oldest()
    r.dead_timeout = 0.5
    for w in writers:
        w.close()  # a clean close: writer_pid 0, the writer is gone
    got = 0
    t0 = time.monotonic()
    with pytest.raises(WriterGoneError, match="has been gone for"):
        for _ in r:
            got += 1
    assert got == rings  # the records written before it left are read first
    assert time.monotonic() - t0 >= 0.5
    r.close()
    for w in writers:
        w.close(unlink=True)


def test_close_inside_the_loop_ends_it(instance: str) -> None:
    with RingWriter.create(instance, "books", "book", symbols=["S"], capacity=16) as w:
        for k in range(5):
            w.commit_book(0, 1, 0, 0, k, k, 0, 0, 0)
        r = attach(instance, "books")
        r.seek_oldest()
        got = []
        for rec in r:
            got.append(int(rec["last_update_id"]))
            if len(got) == 2:
                r.close()
        assert got == [0, 1]
        assert list(r) == []  # a closed reader yields nothing
        w.close(unlink=True)


def test_iteration_over_shards_names_every_record_even_after_a_ring_gains_a_symbol(
    instance: str,
) -> None:
    w0 = RingWriter.create(instance, "books.f.0", "book", symbols=["A"], capacity=64)
    w1 = RingWriter.create(instance, "books.f.1", "book", symbols=["C"], capacity=64)
    try:
        r = attach(instance, "books")
        it = iter(r)
        w0.commit_book(0, 1, 0, 0, 1, 1, 0, 0, 0)
        w1.commit_book(0, 1, 0, 0, 2, 2, 0, 0, 0)
        first = sorted((r.symbols[rec["symbol_id"]], int(rec["last_update_id"])) for rec in [
            next(it).copy(), next(it).copy()
        ])  # fmt: skip
        assert first == [("A", 1), ("C", 2)]
        # Ring 0 gains B: ring 1's ids move up by one once the reader looks B up.
        sid_b = w0.add_symbol("B")
        assert r.latest("B") is None and r.symbols == ["A", "B", "C"]
        w0.commit_book(sid_b, 1, 0, 0, 3, 3, 0, 0, 0)
        w1.commit_book(0, 1, 0, 0, 4, 4, 0, 0, 0)
        later = sorted((r.symbols[rec["symbol_id"]], int(rec["last_update_id"])) for rec in [
            next(it).copy(), next(it).copy()
        ])  # fmt: skip
        assert later == [("B", 3), ("C", 4)]
        r.close()
    finally:
        w0.close(unlink=True)
        w1.close(unlink=True)
