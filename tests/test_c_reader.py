"""The layout contract from another language: a C reader of readers/c/mdpipe_reader.h."""

from __future__ import annotations

import mmap
import shutil
import struct
import subprocess
from pathlib import Path

import posix_ipc
import pytest

from mdpipe.shm import layout as L
from mdpipe.shm.segment import shm_name
from mdpipe.shm.writer import RingWriter

SRC = Path(__file__).resolve().parent.parent / "readers" / "c"


@pytest.fixture(scope="module")
def tail_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed for the C reader test (Debian: apt-get install gcc)"
    out = tmp_path_factory.mktemp("c") / "mdpipe_tail"
    subprocess.run(
        [
            cc,
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
            str(out),
            str(SRC / "mdpipe_tail.c"),
            "-lrt",
        ],
        check=True,
    )
    return out


def _write(w: RingWriter, k: int) -> None:
    w.bids[:, 0] = 100.0 + k
    w.bids[:, 1] = 1.5
    w.asks[:, 0] = 101.0 + k
    w.asks[:, 1] = 2.25
    w.commit_book(0, L.FLAG_SYNCED, k, k, k, k, 0, 20, 20)


def test_c_reader_reads_records_and_counts_lapping(instance: str, tail_binary: Path) -> None:
    with RingWriter.create(instance, "books", "book", symbols=["BTCUSDT"], capacity=16) as w:
        proc = subprocess.Popen(
            [str(tail_binary), instance, "books", "5"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().startswith("attached depth=20 capacity=16")
        for k in range(5):
            _write(w, k)
        out, _ = proc.communicate(timeout=30)
        lines = out.splitlines()
        assert lines[0] == "sym=0 u=0 flags=1 bid=100.00 x 1.5000 ask=101.00 x 2.2500"
        assert lines[4].startswith("sym=0 u=4 ")
        assert lines[-1] == "lost 0"

        # A reader that sleeps while 100 records go through a 16-slot ring is lapped and
        # says exactly how many it lost: 100 written, it reads the newest 15.
        proc = subprocess.Popen(
            [str(tail_binary), instance, "books", "15", "--wait-ms", "1500"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().startswith("attached")
        for k in range(5, 105):
            _write(w, k)
        out, _ = proc.communicate(timeout=30)
        lines = out.splitlines()
        assert lines[0].startswith("sym=0 u=90 ") and lines[-2].startswith("sym=0 u=104 ")
        assert lines[-1] == "lost 85"


def test_c_reader_refuses_other_layout_version(instance: str, tail_binary: Path) -> None:
    with RingWriter.create(instance, "books", "book", symbols=["BTCUSDT"], capacity=16):
        shm = posix_ipc.SharedMemory(shm_name(instance, "books"))
        mm = mmap.mmap(shm.fd, 0)
        shm.close_fd()
        struct.pack_into("<I", mm, L.H_VERSION, L.LAYOUT_VERSION + 1)
        mm.close()
        proc = subprocess.run(
            [str(tail_binary), instance, "books", "1"], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 2
        assert (
            f"layout version {L.LAYOUT_VERSION + 1}, this reader reads version {L.LAYOUT_VERSION}"
            in proc.stderr
        )
