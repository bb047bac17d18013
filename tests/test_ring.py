"""The shared-memory ring: records, seqlock consistency, lapping, read-only maps, restarts."""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import posix_ipc
import pytest

from mdpipe.readers import LayoutError, NoSuchRingError, attach
from mdpipe.shm import layout as L
from mdpipe.shm.segment import shm_name, shm_path
from mdpipe.shm.status import StatusWriter
from mdpipe.shm.writer import RingWriter, WriterAliveError

CTX = mp.get_context("spawn")


def fill_book(w: RingWriter, k: int) -> None:
    """Levels that are a pure function of k, so any torn mix of two records is detectable."""
    w.bids[:, 0] = k
    w.bids[:, 1] = k + 0.5
    w.asks[:, 0] = k + 1
    w.asks[:, 1] = k + 1.5


def book_ok(rec: np.void | np.ndarray) -> bool:
    k = rec["last_update_id"].astype(np.float64)
    kk = k[..., None]
    return bool(
        (rec["bids"][..., 0] == kk).all()
        and (rec["bids"][..., 1] == kk + 0.5).all()
        and (rec["asks"][..., 0] == kk + 1).all()
        and (rec["asks"][..., 1] == kk + 1.5).all()
        and (rec["first_update_id"] == rec["last_update_id"]).all()
        and (rec["exchange_ts_ns"] == rec["last_update_id"].astype(np.int64)).all()
    )


def test_book_and_trade_records_round_trip(instance: str) -> None:
    with RingWriter.create(
        instance, "books", "book", symbols=["BTCUSDT", "ETHUSDT"], capacity=64
    ) as w:
        r = attach(instance, "books", kind="book")
        assert r.symbols == ["BTCUSDT", "ETHUSDT"]
        assert r.poll() is None and r.latest("BTCUSDT") is None and r.top("BTCUSDT") is None
        fill_book(w, 7)
        n = w.commit_book(1, L.FLAG_SYNCED, 7, 11, 5, 7, 4, 20, 19)
        assert n == 0
        rec = r.poll()
        assert rec is not None
        assert rec["seq"] == 2 and rec["symbol_id"] == 1 and rec["flags"] == L.FLAG_SYNCED
        assert (rec["exchange_ts_ns"], rec["recv_ts_ns"]) == (7, 11)
        assert (rec["first_update_id"], rec["last_update_id"], rec["prev_update_id"]) == (5, 7, 4)
        assert (rec["bid_count"], rec["ask_count"], rec["symbol_seq"]) == (20, 19, 1)
        assert rec["commit_ts_ns"] >= rec["recv_ts_ns"]
        assert r.poll() is None
        assert r.top("ETHUSDT") == (7.0, 7.5, 8.0, 8.5)
        assert r.latest("ETHUSDT")["last_update_id"] == 7
        assert r.latest("BTCUSDT") is None
        # An unsynced record hides the book from top(): never a guessed price.
        w.commit_book(1, 0, 8, 12, 8, 8, 7, 0, 0)
        assert r.top("ETHUSDT") is None
        assert r.latest("ETHUSDT")["symbol_seq"] == 2
        with pytest.raises(KeyError, match="XRPUSDT"):
            r.latest("XRPUSDT")
        r.close()

    with RingWriter.create(instance, "trades", "trade", symbols=["BTCUSDT"], capacity=8) as w:
        r = attach(instance, "trades", kind="trade")
        w.commit_trade(0, L.FLAG_BUYER_MAKER, 1, 2, 3, 99, 98, 100, 61800.3, 0.006, -1)
        rec = r.poll()
        assert (rec["trade_id"], rec["first_trade_id"], rec["last_trade_id"]) == (99, 98, 100)
        assert (rec["price"], rec["qty"], rec["side"]) == (61800.3, 0.006, -1)
        assert rec["flags"] == L.FLAG_BUYER_MAKER and rec["symbol_seq"] == 1
        assert (rec["exchange_ts_ns"], rec["event_ts_ns"], rec["recv_ts_ns"]) == (1, 2, 3)
        with pytest.raises(TypeError, match="book ring"):
            r.top("BTCUSDT")
        r.close()


def _stress_writer(instance: str, count: int, ready: mp.Event, go: mp.Event) -> None:
    w = RingWriter.create(instance, "books", "book", symbols=["S"], capacity=1024)
    ready.set()
    go.wait()
    for k in range(count):
        fill_book(w, k)
        w.commit_book(0, L.FLAG_SYNCED, k, 0, k, k, 0, 20, 20)
    w.close()


def _stress_reader(
    instance: str, mode: str, attached: mp.Event, done: mp.Event, out: mp.Queue
) -> None:
    r = attach(instance, "books", wait=True, timeout=30)
    attached.set()
    accepted = torn = reads = 0
    last = -1
    gaps_ok = True
    while True:
        finished = done.is_set()
        if mode == "poll":
            rec = r.poll()
            reads += 1
            batch = None if rec is None else np.array([rec])
        else:
            batch = r.read_batch(256)
            reads += 1
            if not len(batch):
                batch = None
        if batch is None:
            if finished:
                break
            continue
        ok = book_ok(batch)
        if not ok:
            torn += sum(not book_ok(b) for b in batch)
        ids = batch["last_update_id"].astype(np.int64)
        # Records arrive in order; skipped ranges must be exactly what `lost` says.
        if ids[0] <= last or (len(ids) > 1 and (np.diff(ids) != 1).any()):
            gaps_ok = False
        last = int(ids[-1])
        accepted += len(batch)
    out.put(
        {
            "mode": mode,
            "accepted": accepted,
            "torn": torn,
            "reads": reads,
            "lost": r.lost,
            "last": last,
            "ordered": gaps_ok,
        }
    )


def test_torn_read_stress_no_torn_record_accepted(instance: str) -> None:
    """A writer at full speed, a polling and a batch reader: no torn record is ever accepted,
    and every message is read or counted lost (tests/shm has the 10 M-read stress per path)."""
    count = 500_000  # ~500 laps of the 1,024-slot ring
    ready, go, done = CTX.Event(), CTX.Event(), CTX.Event()
    out = CTX.Queue()
    writer = CTX.Process(target=_stress_writer, args=(instance, count, ready, go))
    writer.start()
    assert ready.wait(30)
    attached = [CTX.Event(), CTX.Event()]
    readers = [
        CTX.Process(target=_stress_reader, args=(instance, m, a, done, out))
        for m, a in zip(("poll", "batch"), attached, strict=True)
    ]
    for p in readers:
        p.start()
    for a in attached:  # both readers start at message 0, so every message is accounted for
        assert a.wait(60)
    go.set()
    writer.join(180)
    assert writer.exitcode == 0
    done.set()
    results = [out.get(timeout=60) for _ in readers]
    for p in readers:
        p.join(30)
    for res in results:
        print(res)
        assert res["torn"] == 0, res
        assert res["ordered"], res
        assert res["accepted"] > 10_000, res
        # Every message from the reader's start to the end was either read or counted lost.
        assert res["last"] == count - 1
        assert res["accepted"] + res["lost"] == count, res


def test_lapped_reader_counts_exact_loss(instance: str) -> None:
    cap = 64
    with RingWriter.create(instance, "books", "book", symbols=["S"], capacity=cap) as w:
        r = attach(instance, "books")
        b = attach(instance, "books")
        for k in range(10):
            fill_book(w, k)
            w.commit_book(0, 1, k, 0, k, k, 0, 20, 20)
        for k in range(10):
            assert r.poll()["last_update_id"] == k
        for k in range(10, 10 + 5 * cap + 3):
            fill_book(w, k)
            w.commit_book(0, 1, k, 0, k, k, 0, 20, 20)
        total = 10 + 5 * cap + 3
        got = []
        while (rec := r.poll()) is not None:
            got.append(int(rec["last_update_id"]))
        assert got == list(range(got[0], total))
        assert r.lost == got[0] - 10
        assert len(got) == cap - 1
        # The batch reader sees the same: what it read plus what it lost is everything.
        rows = []
        while len(batch := b.read_batch(50)):
            assert book_ok(batch)
            rows.extend(batch["last_update_id"].tolist())
        assert rows == list(range(rows[0], total))
        assert b.lost + len(rows) == total
        r.close()
        b.close()


def test_reader_maps_read_only(instance: str) -> None:
    with RingWriter.create(instance, "books", "book", symbols=["S"], capacity=8) as w:
        w.commit_book(0, 1, 0, 0, 1, 1, 0, 0, 0)
        r = attach(instance, "books")
        ring = r._parts[0].ring
        with pytest.raises(TypeError):
            ring.mm[0:8] = b"\0" * 8
        assert not ring.slots.flags.writeable
        r.close()
        # Even native code cannot write through a reader's mapping: the page is PROT_READ.
        code = textwrap.dedent(f"""
            import ctypes, numpy as np
            from mdpipe.readers import attach
            r = attach({instance!r}, "books")
            addr = np.frombuffer(r._parts[0].ring.mm, np.uint8).ctypes.data
            ctypes.memset(addr + 4096, 0, 8)
            print("wrote")
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == -signal.SIGSEGV, proc
        assert "wrote" not in proc.stdout


def _poke_u32(instance: str, ring: str, offset: int, value: int) -> None:
    shm = posix_ipc.SharedMemory(shm_name(instance, ring))
    mm = mmap.mmap(shm.fd, 0)
    shm.close_fd()
    struct.pack_into("<I", mm, offset, value)
    mm.close()


def test_reader_refuses_other_layout_version_and_kind(instance: str) -> None:
    with RingWriter.create(instance, "books", "book", symbols=["S"], capacity=8):
        with pytest.raises(LayoutError, match="holds book records, not trade"):
            attach(instance, "books", kind="trade")
        _poke_u32(instance, "books", L.H_VERSION, L.LAYOUT_VERSION + 1)
        with pytest.raises(LayoutError, match=f"layout_version is {L.LAYOUT_VERSION + 1}"):
            attach(instance, "books")
        _poke_u32(instance, "books", L.H_VERSION, L.LAYOUT_VERSION)
        attach(instance, "books").close()


def test_missing_ring_error_lists_instances(instance: str) -> None:
    with RingWriter.create(instance, "books.x.0", "book", symbols=["S"], capacity=8):
        with pytest.raises(NoSuchRingError, match=f"{instance} \\(books.x.0\\)"):
            attach("nosuchinstance", "books")
        with pytest.raises(NoSuchRingError, match="after waiting 0.2 s"):
            attach(instance, "trades", wait=True, timeout=0.2)


def test_second_live_writer_refused(instance: str) -> None:
    with (
        RingWriter.create(instance, "books", "book", symbols=["S"], capacity=8),
        pytest.raises(WriterAliveError, match=str(os.getpid())),
    ):
        RingWriter.create(instance, "books", "book", symbols=["S"], capacity=8)


def test_segment_mode_and_unreadable_segment(instance: str) -> None:
    with RingWriter.create(instance, "books", "book", symbols=["S"], capacity=8):
        assert os.stat(shm_path(instance, "books")).st_mode & 0o777 == 0o600
        if os.geteuid() != 0:
            return  # only root can drop to another user to check the refusal below
        code = textwrap.dedent(f"""
            import os
            from mdpipe.readers import attach
            os.setgid(65534); os.setuid(65534)
            try:
                attach({instance!r}, "books", owner=0)
            except PermissionError as exc:
                print("refused:", exc)
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "refused: no read access" in proc.stdout, proc


_RESTART_WRITER = """
import sys, time
from mdpipe.shm.writer import RingWriter
instance, capacity, start, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
w = RingWriter.create(instance, "books", "book", symbols=["S"], capacity=capacity)
print(w.generation, flush=True)
k = start
while True:
    w.bids[:, 0] = k
    w.asks[:, 0] = k + 1
    w.commit_book(0, 1, k, 0, k, k, 0, 1, 1)
    k += 1
    time.sleep(0.001)
"""


def _start_writer(instance: str, capacity: int, start: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _RESTART_WRITER, instance, str(capacity), str(start), "x"],
        stdout=subprocess.PIPE,
        text=True,
    )
    generation = int(proc.stdout.readline())
    return proc, generation


def _read_until(r, pred, timeout: float = 20.0) -> np.void:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = r.poll()
        if rec is not None and pred(rec):
            return rec
        if rec is None:
            time.sleep(0.0005)
    raise AssertionError("no matching record in time")


@pytest.mark.parametrize("same_geometry", [True, False])
def test_reader_follows_writer_restart(instance: str, same_geometry: bool) -> None:
    """kill -9 the writer; a new one takes over; the attached reader continues by itself."""
    first, gen1 = _start_writer(instance, 256, 0)
    try:
        r = attach(instance, "books", wait=True, timeout=10)
        _read_until(r, lambda rec: rec["last_update_id"] >= 5)
        assert r.writer_alive
        assert r.top("S")[0] >= 5
        first.kill()
        first.wait()
        assert not r.writer_alive
        # Same geometry: reclaimed in place; other capacity: replaced by a new segment.
        second, gen2 = _start_writer(instance, 256 if same_geometry else 512, 1_000_000)
        try:
            assert gen2 == gen1 + 1
            rec = _read_until(r, lambda rec: rec["last_update_id"] >= 1_000_010)
            assert rec["bids"][0, 0] == rec["last_update_id"]
            assert r.writer_alive and r.generation == gen2 and r.restarts == 1
            bid, _, ask, _ = r.top("S")  # the new writer's book, through the new mapping
            assert bid >= 1_000_010 and ask == bid + 1
        finally:
            second.kill()
            second.wait()
        r.close()
    finally:
        if first.poll() is None:
            first.kill()


def test_attach_merges_shards(instance: str) -> None:
    w0 = RingWriter.create(instance, "books.f.0", "book", symbols=["A"], capacity=16)
    w1 = RingWriter.create(instance, "books.f.1", "book", symbols=["B"], capacity=16)
    try:
        r = attach(instance, "books")
        assert sorted(r.rings) == ["books.f.0", "books.f.1"] and r.symbols == ["A", "B"]
        fill_book(w0, 1)
        w0.commit_book(0, 1, 1, 0, 1, 1, 0, 20, 20)
        fill_book(w1, 2)
        w1.commit_book(0, 1, 2, 0, 2, 2, 0, 20, 20)
        got = sorted(
            (int(rec["last_update_id"]), r.symbols[rec["symbol_id"]])
            for rec in [r.poll(), r.poll()]
        )
        assert got == [(1, "A"), (2, "B")] and r.poll() is None
        assert r.top("B")[0] == 2.0 and r.top("A")[0] == 1.0
        assert r.symbols[r.latest("B")["symbol_id"]] == "B"
        # Reader-wide symbol ids in batches too, and seek_recent rewinds per ring.
        r.seek_recent(1)
        batch = r.read_batch(10)
        assert sorted(r.symbols[i] for i in batch["symbol_id"]) == ["A", "B"]
        r.close()
    finally:
        w0.close()
        w1.close()


def test_counters_and_status_segment(instance: str) -> None:
    from mdpipe.shm.segment import read_status

    with StatusWriter.create(instance, "publisher", counters=["books_published"]) as w:
        w.add("books_published", 5)
        w.set("g_redis_up", 1)
        st = read_status(instance, "publisher")
        assert st.kind == "status" and st.writer_alive and st.writer_pid == os.getpid()
        assert st.counters == {"books_published": 5, "g_redis_up": 1}
        with pytest.raises(LayoutError):
            attach(instance, "publisher", kind="book")
        # Not a ring: attach says what it is instead of returning an empty reader.
        with pytest.raises(LayoutError, match="status segment"):
            attach(instance, "publisher")


def test_group_readable_segment(instance: str) -> None:
    """mode 0640 with a group: members of that group may attach, read-only."""
    import grp

    group = grp.getgrgid(65534).gr_name
    with RingWriter.create(
        instance, "books", "book", symbols=["S"], capacity=8, mode=0o640, group=group
    ) as w:
        st = os.stat(shm_path(instance, "books"))
        assert (st.st_mode & 0o777, st.st_gid) == (0o640, 65534)
        w.commit_book(0, 1, 0, 0, 1, 1, 0, 0, 0)
        if os.geteuid() != 0:
            return
        code = textwrap.dedent(f"""
            import os
            from mdpipe.readers import attach
            os.setgroups([]); os.setgid(65534); os.setuid(65534)
            r = attach({instance!r}, "books", owner=0)
            print("latest", r.latest("S")["last_update_id"])
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "latest 1" in proc.stdout, proc


def test_attach_waits_for_a_header_being_written(instance: str) -> None:
    """A segment whose magic is not written yet is not reported broken: attach looks again."""
    import threading

    with RingWriter.create(instance, "books", "book", symbols=["S"], capacity=8):
        shm = posix_ipc.SharedMemory(shm_name(instance, "books"))
        mm = mmap.mmap(shm.fd, 0)
        shm.close_fd()
        struct.pack_into("<Q", mm, L.H_MAGIC, 0)  # as if the writer were mid-creation
        timer = threading.Timer(0.2, lambda: struct.pack_into("<Q", mm, L.H_MAGIC, L.MAGIC))
        timer.start()
        r = attach(instance, "books")  # no wait=True: the header completes within 1 s
        timer.join()
        assert r.symbols == ["S"]
        r.close()
        mm.close()
