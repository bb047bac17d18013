"""Segments are ours or ignored: links, FIFOs, other owners, writable modes and bad headers."""

from __future__ import annotations

import mmap
import os
import stat
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mdpipe.instrument import Instrument
from mdpipe.readers import LayoutError, NoSuchRingError, ReaderClosedError, attach
from mdpipe.shm import layout as L
from mdpipe.shm.segment import iter_status, list_segments, open_segment, shm_path
from mdpipe.shm.status import StatusWriter
from mdpipe.shm.writer import RingWriter, SegmentSquattedError

ROOT = os.geteuid() == 0


def _poke(instance: str, ring: str, fmt: str, offset: int, value: int) -> None:
    fd = os.open(shm_path(instance, ring), os.O_RDWR)
    mm = mmap.mmap(fd, 0)
    os.close(fd)
    struct.pack_into(fmt, mm, offset, value)
    mm.close()


def _writer(instance: str, ring: str = "books.f.0", **kw: object) -> RingWriter:
    return RingWriter.create(instance, ring, "book", symbols=["BTCUSDT"], capacity=8, **kw)


def test_symlink_is_never_followed(instance: str, tmp_path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"\0" * 8192)
    os.symlink(target, shm_path(instance, "books.f.0"))
    assert list_segments(instance) == []
    with pytest.raises(NoSuchRingError, match="symbolic link"):
        attach(instance, "books")
    with pytest.raises(LayoutError, match="symbolic link"):
        open_segment(instance, "books.f.0", writable=False)
    # A writer of ours replaces its own link atomically; the link's target is untouched.
    with _writer(instance) as w:
        w.commit_book(0, L.FLAG_SYNCED, 0, 0, 1, 1, 0, 0, 0)
        assert stat.S_ISREG(os.lstat(shm_path(instance, "books.f.0")).st_mode)
    assert target.read_bytes() == b"\0" * 8192


def test_fifo_never_blocks(instance: str) -> None:
    os.mkfifo(shm_path(instance, "books.f.0"), 0o600)
    assert list_segments(instance) == []
    with pytest.raises(LayoutError, match="not a regular file"):
        open_segment(instance, "books.f.0", writable=False)
    assert list(iter_status(instance)) == []


@pytest.mark.skipif(not ROOT, reason="needs root to plant a file as another user")
def test_segment_of_another_user_is_ignored_and_never_reused(instance: str) -> None:
    with _writer(instance, "books.f.0") as w:
        w.bids[0] = (61797.7, 1.0)
        w.asks[0] = (61797.8, 1.0)
        w.commit_book(0, L.FLAG_SYNCED, 0, 0, 1, 1, 0, 1, 1)
        # Another user's copy under a name of the same instance, with a fake price.
        fake = shm_path(instance, "books.x.0")
        with open(shm_path(instance, "books.f.0"), "rb") as f:
            raw = bytearray(f.read())
        off = L.PAGE * 0  # the latest slot holds the price top() reads
        seg_latest = struct.unpack_from("<Q", raw, L.H_LATEST_OFFSET)[0]
        struct.pack_into("<d", raw, seg_latest + L.BOOK_LEVELS_OFFSET + off, 104.0)
        with open(fake, "wb") as f:
            f.write(raw)
        os.chown(fake, 65534, 65534)
        os.chmod(fake, 0o644)
        assert list_segments(instance) == [(instance, "books.f.0")]
        with attach(instance, "books") as r:
            assert r.rings == ["books.f.0"]
            assert r.top("BTCUSDT") == (61797.7, 1.0, 61797.8, 1.0)
        assert [st.ring for st in iter_status(instance)] == ["books.f.0"]
        # Only under owner= naming that user is it read.
        with attach(instance, "books.x.0", owner=65534) as r:
            assert r.top("BTCUSDT")[0] == 104.0
    # A writer refuses a name squatted by another user, naming the owner.
    with pytest.raises(SegmentSquattedError, match="uid 65534"):
        _writer(instance, "books.x.0")
    os.unlink(fake)


def test_world_writable_segment_of_ours_is_refused_and_replaced(instance: str) -> None:
    w = _writer(instance)
    w.close()
    path = shm_path(instance, "books.f.0")
    os.chmod(path, 0o666)
    inode = os.stat(path).st_ino
    assert list_segments(instance) == []
    with pytest.raises(NoSuchRingError, match="writable by group or others"):
        attach(instance, "books")
    with _writer(instance) as w:
        st = os.stat(path)
        assert st.st_ino != inode and stat.S_IMODE(st.st_mode) == 0o600
        w.commit_book(0, 0, 0, 0, 1, 1, 0, 0, 0)
        with attach(instance, "books") as r:
            assert r.latest("BTCUSDT")["last_update_id"] == 1


@pytest.mark.parametrize(
    ("field", "fmt", "value", "words"),
    [
        ("kind", "<I", 9, "field kind"),
        ("capacity", "<Q", 3, "field capacity"),
        ("capacity", "<Q", 1 << 40, "field capacity"),
        ("depth", "<I", 5000, "field depth"),
        ("max_symbols", "<I", 2**32 - 1, "field max_symbols"),
        ("n_symbols", "<I", 3 * 10**7, "field n_symbols"),
        ("n_counters", "<I", 5000, "field n_counters"),
        ("slot_size", "<I", 64, "field slot_size"),
        ("slots_offset", "<Q", 1 << 50, "field slots_offset"),
        ("segment_size", "<Q", 1 << 50, "field segment_size"),
        ("dtype_descr", "<Q", 0x7B7B7B7B7B7B7B7B, "field dtype_descr"),
    ],
)
def test_bad_header_field_is_one_typed_error_naming_it(
    instance: str, field: str, fmt: str, value: int, words: str
) -> None:
    with _writer(instance):
        offset = next(f.offset for f in L.HEADER_FIELDS if f.name == field)
        _poke(instance, "books.f.0", fmt, offset, value)
        with pytest.raises(LayoutError, match=words):
            attach(instance, "books")
        assert list(iter_status(instance)) == []


def test_truncated_segment_is_refused_before_mapping(instance: str) -> None:
    with _writer(instance):
        os.truncate(shm_path(instance, "books.f.0"), L.PAGE * 2)
        with pytest.raises(LayoutError, match="segment_size"):
            attach(instance, "books")


def test_reader_arguments_are_checked(instance: str) -> None:
    with _writer(instance) as w:
        for k in range(5):
            w.commit_book(0, 0, 0, 0, k, k, 0, 0, 0)
        for bad in (-1, 0, float("nan"), "fast", True):
            with pytest.raises(ValueError, match="idle"):
                attach(instance, "books", idle=bad)
        with pytest.raises(ValueError, match="timeout"):
            attach(instance, "books", wait=False, timeout=2)
        with pytest.raises(NoSuchRingError, match="after waiting 0.1 s"):
            attach(instance, "trades", timeout=0.1)  # a timeout alone means wait
        with pytest.raises(ValueError, match="instance name"):
            attach("", "books")
        r = attach(instance, "books")
        for bad in (-5, 1.5, None):
            with pytest.raises(ValueError, match="seek_recent"):
                r.seek_recent(bad)
        for bad in (-100, "3"):
            with pytest.raises(ValueError, match="seek"):
                r.seek(bad)
        assert r.lost == 0
        r.seek(0)
        assert r.lost == 0 and r.poll()["last_update_id"] == 0
        with pytest.raises(ValueError, match="max_n"):
            r.read_batch(0)
        r.close()
        with pytest.raises(ReaderClosedError):
            r.top("BTCUSDT")
        with pytest.raises(ReaderClosedError):
            r.latest("BTCUSDT")
        with pytest.raises(ReaderClosedError):
            r.read_batch()


def test_status_segment_is_not_a_ring(instance: str) -> None:
    with StatusWriter.create(instance, "publisher", entries=["a"], counters=["x"]) as s:
        s.add("x", 3)
        with pytest.raises(LayoutError, match="status segment"):
            attach(instance, "publisher")
        (st,) = list(iter_status(instance))
        assert (st.kind, st.symbols, st.counters) == ("status", ["a"], {"x": 3})


def test_partial_latest_reads_only_the_levels_asked(instance: str) -> None:
    with _writer(instance) as w:
        w.bids[:, 0] = 100 - np.arange(20)
        w.bids[:, 1] = 1
        w.asks[:, 0] = 101 + np.arange(20)
        w.asks[:, 1] = 2
        w.commit_book(0, L.FLAG_SYNCED, 5, 6, 7, 8, 6, 20, 20)
        with attach(instance, "books") as r:
            rec = r.latest("BTCUSDT", levels=3)
            assert rec.dtype == L.book_dtype(3)
            assert list(rec["bids"][:, 0]) == [100, 99, 98] and list(rec["asks"][:, 0]) == [
                101,
                102,
                103,
            ]
            assert (rec["last_update_id"], rec["bid_count"], rec["ask_count"]) == (8, 3, 3)
            assert r.latest("BTCUSDT")["bid_count"] == 20
            with pytest.raises(ValueError, match="levels"):
                r.latest("BTCUSDT", levels=21)


def test_same_symbol_on_two_venues_never_collides(instance: str) -> None:
    perp = Instrument("BTC", "USDT", "perp")
    rings = []
    for ring, exchange, bid in (
        ("books.bn.0", "binance-futures", 100.0),
        ("books.by.0", "bybit-linear", 101.0),
    ):
        w = RingWriter.create(
            instance,
            ring,
            "book",
            symbols=["BTCUSDT"],
            instruments={"BTCUSDT": perp},
            capacity=8,
            exchange=exchange,
        )
        w.bids[0] = (bid, 1.0)
        w.asks[0] = (bid + 0.5, 1.0)
        w.commit_book(0, L.FLAG_SYNCED, 0, 0, 1, 1, 0, 1, 1)
        rings.append(w)
    try:
        with attach(instance, "books") as r:
            assert r.top("binance-futures:BTCUSDT")[0] == 100.0
            assert r.top("bybit-linear:BTCUSDT")[0] == 101.0
            with pytest.raises(KeyError, match="several venues"):
                r.top("BTCUSDT")
            assert r.instruments == [perp, perp]
            assert r.tops("BTC/USDT") == {
                "binance-futures:BTCUSDT": (100.0, 1.0, 100.5, 1.0),
                "bybit-linear:BTCUSDT": (101.0, 1.0, 101.5, 1.0),
            }
            assert r.tops(Instrument("BTC", "USDT", "spot")) == {}
    finally:
        for w in rings:
            w.close()


@pytest.mark.skipif(not ROOT, reason="needs root to drop to another user")
def test_reader_of_another_user_names_the_owner(instance: str) -> None:
    with _writer(instance, mode=0o644) as w:
        w.commit_book(0, 0, 0, 0, 1, 1, 0, 0, 0)
        code = textwrap.dedent(f"""
            import os
            from mdpipe.readers import attach, NoSuchRingError
            os.setgroups([]); os.setgid(65534); os.setuid(65534)
            try:
                attach({instance!r}, "books")
            except NoSuchRingError as exc:
                print("refused:", exc)
            print("read:", attach({instance!r}, "books", owner="root").latest("BTCUSDT")["last_update_id"])
        """)
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert "refused:" in proc.stdout and "uid 0" in proc.stdout, proc
        assert "read: 1" in proc.stdout, proc


def test_generated_docs_and_c_header_match_the_descriptor() -> None:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "readers/c/mdpipe_layout.h")) as f:
        assert f.read() == L.c_header(), "regenerate: python -m mdpipe.shm.layout --c-header"
    with open(os.path.join(repo, "docs/layout.md")) as f:
        assert L.markdown_tables() in f.read(), "regenerate docs/layout.md's tables"
