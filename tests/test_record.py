"""The tape recorder with real files and threads: the line format, a bounded hand-off that
drops (counted) instead of blocking, a crash that loses at most the unflushed second and
never corrupts a tape, and a failing disk as a counted, logged error."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

from mdpipe.record.tapes import (
    BYTES_WRITTEN,
    FILES_FINISHED,
    FRAMES_DROPPED,
    FRAMES_RECORDED,
    WRITE_ERRORS,
    TapeRecorder,
    whole_members,
)

DAY_NS = 1_796_083_200_000_000_000  # 2026-12-01T00:00Z


def frame(i: int) -> bytes:
    return b'{"stream":"btcusdt@trade","data":{"t":%d}}' % i


def tape_lines(root: Path) -> list[bytes]:
    out: list[bytes] = []
    for f in sorted(root.rglob("*.gz")):
        out += gzip.decompress(f.read_bytes()).splitlines()
    return out


def test_frames_become_tape_lines_split_per_utc_day(tmp_path: Path) -> None:
    rec = TapeRecorder(tmp_path, "binance-futures", "usdm", 0, flush_interval=0.05)
    for i in range(100):
        rec.frame(frame(i), DAY_NS - 50 + i)  # 50 before midnight, 50 after
    rec.frame(b'{"lastUpdateId":7,"bids":[],"asks":[]}', DAY_NS + 100)
    rec.close()
    days = sorted(p.name for p in (tmp_path / "binance-futures" / "usdm").iterdir())
    assert days == ["2026-11-30", "2026-12-01"]
    lines = tape_lines(tmp_path)
    assert lines[0] == b"%d %s" % (DAY_NS - 50, frame(0))
    assert [int(x.split(b" ", 1)[0]) for x in lines] == [DAY_NS - 50 + i for i in range(100)] + [
        DAY_NS + 100
    ]
    assert rec.c[FRAMES_RECORDED] == 101 and rec.c[FILES_FINISHED] == 2
    assert rec.c[BYTES_WRITTEN] == sum(f.stat().st_size for f in tmp_path.rglob("*.gz"))
    assert not list(tmp_path.rglob("*.part"))


def test_the_hand_off_is_bounded_and_never_blocks(tmp_path: Path) -> None:
    rec = TapeRecorder(tmp_path, "v", "f", 0, queue=10, flush_interval=3600)
    t0 = time.perf_counter()
    for i in range(25):
        rec.frame(frame(i), DAY_NS + i)
    assert time.perf_counter() - t0 < 1.0
    assert rec.c[FRAMES_DROPPED] == 15
    rec.close()  # the 10 queued are written
    assert len(tape_lines(tmp_path)) == 10


def test_a_torn_tape_is_cut_to_its_whole_members(tmp_path: Path) -> None:
    day = tmp_path / "v" / "f" / "2026-12-01"
    day.mkdir(parents=True)
    first = gzip.compress(b"1 a\n2 b\n")
    second = gzip.compress(b"3 c\n")
    torn = gzip.compress(b"4 d\n5 e\n")[:-7]
    (day / "f-0-000000.gz.part").write_bytes(first + second + torn)
    assert whole_members(first + second + torn) == len(first + second)
    TapeRecorder(tmp_path, "v", "f", 0).close()
    assert not list(tmp_path.rglob("*.part"))
    assert tape_lines(tmp_path) == [b"1 a", b"2 b", b"3 c"]


RECORD_UNTIL_KILLED = """
import sys, time
from pathlib import Path
from mdpipe.record.tapes import TapeRecorder
rec = TapeRecorder(Path(sys.argv[1]), "v", "f", 0, flush_interval=0.1)
i = 0
while True:
    rec.frame(b'{"n":%d}' % i, time.time_ns())
    i += 1
    if i % 100 == 0:
        print(i, flush=True)
        time.sleep(0.01)
"""


def test_kill_9_loses_at_most_the_unflushed_second_and_corrupts_nothing(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORD_UNTIL_KILLED, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    handed = 0
    deadline = time.monotonic() + 60
    while handed < 3000 and time.monotonic() < deadline:
        handed = int(proc.stdout.readline())
    assert list(tmp_path.rglob("*.part")), "nothing flushed yet"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    TapeRecorder(tmp_path, "v", "f", 0).close()  # the next recorder finishes the torn tape
    lines = tape_lines(tmp_path)
    numbers = [json.loads(x.split(b" ", 1)[1])["n"] for x in lines]
    assert numbers == list(range(len(numbers)))  # an exact prefix: nothing corrupt
    assert len(numbers) >= 100


FAILING_DISK = """
import json, logging, resource, signal, sys
from pathlib import Path
from mdpipe.record.tapes import TapeRecorder
logging.basicConfig(level=logging.INFO)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
rec = TapeRecorder(Path(sys.argv[1]), "v", "f", 0, flush_interval=3600, level=1)
import os
for batch in range(3):
    for i in range(200):
        rec.frame(os.urandom(40).hex().encode(), 1796083200000000000 + batch * 1000 + i)
    rec._write_pending()
rec.close()
print(json.dumps([int(x) for x in rec.c]))
"""


def test_a_failing_disk_is_a_counted_logged_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FAILING_DISK, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    c = json.loads(out.stdout)
    assert c[WRITE_ERRORS] >= 1 and c[FRAMES_DROPPED] >= 200
    assert c[FRAMES_RECORDED] + c[FRAMES_DROPPED] == 600
    assert "frames are dropped (counted) until it succeeds" in out.stderr
    assert out.stderr.count("frames are dropped") == 1  # logged once per failure spell
    assert "Traceback" not in out.stderr
    lines = tape_lines(tmp_path)  # what was written is whole
    assert len(lines) == c[FRAMES_RECORDED]


def test_record_keep_days_deletes_older_days(tmp_path: Path) -> None:
    from datetime import date

    from mdpipe.record.tapes import expire_tapes

    for day in ("2026-11-20", "2026-11-29", "2026-12-01"):
        (tmp_path / "v" / "f" / day).mkdir(parents=True)
        (tmp_path / "v" / "f" / day / "f-0-000000.gz").write_bytes(gzip.compress(b"1 {}\n"))
    removed = expire_tapes(tmp_path, 2, today=date(2026, 12, 1))
    assert sorted(p.name for p in removed) == ["2026-11-20", "2026-11-29"]
    assert [p.name for p in (tmp_path / "v" / "f").iterdir()] == ["2026-12-01"]
    assert expire_tapes(tmp_path, 0, today=date(2030, 1, 1)) == []  # 0 keeps everything
