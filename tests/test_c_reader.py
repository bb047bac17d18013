"""The layout contract from another language: the C reader of readers/c/mdpipe_reader.h.

It reads good records and counts what the writer lapped, and it refuses anything that is
not ours or not in bounds (another layout version, a symlink, a FIFO, another owner, a
world-writable file, every header field out of bounds) with one message naming the
segment and the field. A fuzz harness in C feeds it 10,000 mutated segments.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from mdpipe.instrument import Instrument
from mdpipe.shm import layout as L
from mdpipe.shm.segment import shm_path
from mdpipe.shm.writer import RingWriter

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "readers" / "c"
NOBODY = 65534


def _compile(out: Path, source: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed for the C reader test (Debian: apt-get install gcc)"
    subprocess.run(
        [cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(source), "-lrt"],
        check=True,
    )
    return out


@pytest.fixture(scope="module")
def tail_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile(tmp_path_factory.mktemp("c") / "mdpipe_tail", SRC / "mdpipe_tail.c")


@pytest.fixture(scope="module")
def fuzz_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile(
        tmp_path_factory.mktemp("c") / "fuzz_header", ROOT / "tests" / "c" / "fuzz_header.c"
    )


# The geometry of good_segment: 16 slots, 4 symbols, depth 20.
GOOD = L.segment_geometry(L.KIND_BOOK, 16, 20, 4)
SIZE, SLOTS, LATEST = GOOD["segment_size"], GOOD["slots_offset"], GOOD["latest_offset"]


@pytest.fixture(scope="module")
def good_segment(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a small book segment that the writer filled with 40 records."""
    instance = "tpl" + os.urandom(5).hex()
    with RingWriter.create(
        instance, "books", "book", symbols=["BTCUSDT", "ETHUSDT"], capacity=16, max_symbols=4
    ) as w:
        for k in range(40):
            _write(w, k)
        data = Path(shm_path(instance, "books")).read_bytes()
        w.close(unlink=True)
    return data


def _write(w: RingWriter, k: int) -> None:
    w.bids[:, 0] = 100.0 + k
    w.bids[:, 1] = 1.5
    w.asks[:, 0] = 101.0 + k
    w.asks[:, 1] = 2.25
    w.commit_book(0, L.FLAG_SYNCED, k, k, k, k, 0, 20, 20)


def _plant(instance: str, data: bytes, mode: int = 0o600) -> Path:
    """A segment file with these bytes where the reader looks for ring `books`."""
    path = Path(shm_path(instance, "books"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def _tail(binary: Path, instance: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), instance, "books", *args], capture_output=True, text=True, timeout=30
    )


def _refused(binary: Path, instance: str, *args: str) -> str:
    proc = _tail(binary, instance, "1", *args)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"mdpipe_tail: {shm_path(instance, 'books')}")
    return proc.stderr


def test_c_header_matches_the_layout(tmp_path: Path) -> None:
    """Every offset and record field the C reader uses is where the Python layout puts it."""
    header_fields = {
        f"MDP_{name}": getattr(L, name)
        for name in [
            "H_MAGIC",
            "H_KIND",
            "H_CAPACITY",
            "H_RECORD_SIZE",
            "H_DEPTH",
            "H_MAX_SYMBOLS",
            "H_N_SYMBOLS",
            "H_N_COUNTERS",
            "H_SLOT_SIZE",
            "H_SYMBOLS_OFFSET",
            "H_LATEST_OFFSET",
            "H_SLOTS_OFFSET",
            "H_SEGMENT_SIZE",
            "H_GENERATION",
            "H_WRITE_CURSOR",
            "SYMBOL_ENTRY",
            "S_NAME",
            "S_BASE",
            "S_QUOTE",
            "S_KIND",
            "LAYOUT_VERSION",
            "MAGIC",
            "KIND_BOOK",
            "KIND_TRADE",
            "KIND_STATUS",
            "FLAG_SYNCED",
            "FLAG_PARTIAL",
            "FLAG_RESYNC",
            "FLAG_CROSSED",
            "FLAG_BUYER_MAKER",
            "PAGE",
            "CACHE_LINE",
            "MAX_CAPACITY",
            "MAX_DEPTH",
            "MAX_SYMBOLS",
            "MAX_COUNTERS",
            "MAX_SEGMENT_BYTES",
            "COUNTERS_OFFSET",
            "COUNTER_NAMES_OFFSET",
            "TABLES_OFFSET",
        ]
    }
    header_fields["MDP_H_LAYOUT_VERSION"] = L.H_VERSION
    records = {
        "mdp_book_record": L.book_dtype(1),
        "mdp_trade_record": L.TRADE_DTYPE,
    }
    lines = [f'#include "{SRC / "mdpipe_reader.h"}"', "#include <stddef.h>", "int main(void) {"]
    for name in header_fields:
        lines.append(f'    printf("{name} %llu\\n", (unsigned long long)({name}));')
    for struct_name, dtype in records.items():
        for field in dtype.names:
            if field in ("bids", "asks", "_pad0"):
                continue
            lines.append(
                f'    printf("{struct_name}.{field} %zu\\n", offsetof({struct_name}, {field}));'
            )
    lines.append('    printf("mdp_book_record.bids %d\\n", MDP_BOOK_LEVELS_OFFSET);')
    lines.append('    printf("mdp_trade_record.itemsize %zu\\n", sizeof(mdp_trade_record));')
    lines += ["    return 0;", "}"]
    source = tmp_path / "offsets.c"
    source.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [str(_compile(tmp_path / "offsets", source))], capture_output=True, text=True, check=True
    ).stdout
    seen = dict(line.rsplit(" ", 1) for line in out.splitlines())
    expected = {name: str(value) for name, value in header_fields.items()}
    for struct_name, dtype in records.items():
        for field in dtype.names:
            if field not in ("asks", "_pad0"):
                expected[f"{struct_name}.{field}"] = str(dtype.fields[field][1])
    expected["mdp_trade_record.itemsize"] = str(L.TRADE_DTYPE.itemsize)
    assert seen == expected


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


def test_c_reader_lists_symbols_with_their_instruments(instance: str, tail_binary: Path) -> None:
    instruments = {
        "BTC-USDT-SWAP": Instrument("BTC", "USDT", "perp"),
        "ETHUSDT": Instrument("ETH", "USDT", "spot"),
    }
    with RingWriter.create(
        instance, "books", "book", symbols=[*instruments, "XYZ"], instruments=instruments
    ):
        proc = _tail(tail_binary, instance, "--symbols")
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines() == [
        "0 BTC-USDT-SWAP BTC/USDT:perp",
        "1 ETHUSDT ETH/USDT:spot",
        "2 XYZ /:",
    ]


def test_c_reader_reads_a_copied_good_segment(
    instance: str, tail_binary: Path, good_segment: bytes
) -> None:
    """The planted files below differ from this one only in what each test changes."""
    _plant(instance, good_segment)
    proc = subprocess.Popen(
        [str(tail_binary), instance, "books", "1"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().startswith("attached depth=20 capacity=16")
    # The writer is gone: append record 40 by hand, as the writer would, and see it read.
    data = bytearray(good_segment)
    slots = struct.unpack_from("<Q", data, L.H_SLOTS_OFFSET)[0]
    stride = struct.unpack_from("<I", data, L.H_SLOT_SIZE)[0]
    slot = slots + (40 % 16) * stride
    rec_39 = slots + (39 % 16) * stride
    data[slot : slot + stride] = data[rec_39 : rec_39 + stride]
    struct.pack_into("<Q", data, slot, 2 * 40 + 2)
    struct.pack_into("<Q", data, slot + 48, 40)  # last_update_id
    with open(shm_path(instance, "books"), "r+b") as f:
        f.seek(slot)
        f.write(data[slot : slot + stride])
        f.seek(L.H_WRITE_CURSOR)
        f.write(struct.pack("<Q", 41))
    out, _ = proc.communicate(timeout=30)
    assert out.splitlines()[0].startswith("sym=0 u=40 flags=1 bid=139.00")
    assert proc.returncode == 0


def test_c_reader_refuses_other_layout_version(
    instance: str, tail_binary: Path, good_segment: bytes
) -> None:
    data = bytearray(good_segment)
    struct.pack_into("<I", data, L.H_VERSION, L.LAYOUT_VERSION + 1)
    _plant(instance, bytes(data))
    err = _refused(tail_binary, instance)
    assert (
        f"field layout_version is {L.LAYOUT_VERSION + 1}, "
        f"this reader reads version {L.LAYOUT_VERSION}" in err
    )


def test_c_reader_refuses_a_symlink(
    instance: str, tail_binary: Path, good_segment: bytes, tmp_path: Path
) -> None:
    target = tmp_path / "planted"
    target.write_bytes(good_segment)
    target.chmod(0o600)
    os.symlink(target, shm_path(instance, "books"))
    assert "is a symbolic link, refused" in _refused(tail_binary, instance)


def test_c_reader_refuses_a_fifo_without_hanging(instance: str, tail_binary: Path) -> None:
    os.mkfifo(shm_path(instance, "books"), 0o600)
    assert "not a regular file" in _refused(tail_binary, instance)


def test_c_reader_refuses_a_segment_of_another_owner(
    instance: str, tail_binary: Path, good_segment: bytes
) -> None:
    path = _plant(instance, good_segment)
    os.chown(path, NOBODY, NOBODY)
    err = _refused(tail_binary, instance)
    assert f"owner uid {NOBODY} is not the expected uid {os.geteuid()}, refused" in err
    # Named as the expected owner, the same file is read.
    proc = subprocess.Popen(
        [str(tail_binary), instance, "books", "1", "--owner", str(NOBODY)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("attached depth=20")
    proc.kill()
    proc.wait(30)


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_c_reader_refuses_a_segment_others_may_write(
    instance: str, tail_binary: Path, good_segment: bytes, mode: int
) -> None:
    _plant(instance, good_segment, mode)
    assert "mode lets group or others write it, refused" in _refused(tail_binary, instance)


def test_c_reader_refuses_a_file_shorter_than_a_page(instance: str, tail_binary: Path) -> None:
    _plant(instance, b"MDPIPE\0\1" + bytes(100))
    assert "smaller than one header page" in _refused(tail_binary, instance)


def _replace(instance: str, data: bytes, mode: int = 0o600) -> None:
    """Swap a new file in at the segment's name in one step, as a restarted writer does."""
    tmp = Path(shm_path(instance, "books.new"))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, shm_path(instance, "books"))


def test_c_reader_follows_a_replaced_segment(
    instance: str, tail_binary: Path, good_segment: bytes
) -> None:
    """A writer that recreates the segment is followed from the new one's oldest record."""
    _plant(instance, good_segment)
    proc = subprocess.Popen(
        [str(tail_binary), instance, "books", "2"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().startswith("attached")
    _replace(instance, good_segment)
    out, _ = proc.communicate(timeout=30)
    # 40 records written, 16 slots: the oldest still safe is record 25; 25 counted lost.
    assert out.splitlines() == [
        "sym=0 u=25 flags=1 bid=125.00 x 1.5000 ask=126.00 x 2.2500",
        "sym=0 u=26 flags=1 bid=126.00 x 1.5000 ask=127.00 x 2.2500",
        "lost 25",
    ]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("truncated", f"field segment_size is {SIZE}, the file has 8192 bytes"),
        ("world-writable", "mode lets group or others write it, refused"),
        ("fifo", "not a regular file"),
    ],
)
def test_c_reader_checks_a_replacement_again(
    instance: str, tail_binary: Path, good_segment: bytes, change: str, says: str
) -> None:
    """Every re-map validates the new file as attach does, size included."""
    _plant(instance, good_segment)
    proc = subprocess.Popen(
        [str(tail_binary), instance, "books", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("attached")
    if change == "truncated":
        _replace(instance, good_segment[:8192])
    elif change == "world-writable":
        _replace(instance, good_segment, 0o666)
    else:
        os.unlink(shm_path(instance, "books"))
        os.mkfifo(shm_path(instance, "books"), 0o600)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert out == ""
    assert err.startswith(f"mdpipe_tail: {shm_path(instance, 'books')}: ") and says in err


# (field, offset, struct format, value, what the message says)
OUT_OF_BOUNDS = [
    ("magic", L.H_MAGIC, "<Q", 0, "field magic is 0: the writer is still creating it"),
    ("magic", L.H_MAGIC, "<Q", 0x1234, "field magic is wrong"),
    (
        "kind",
        L.H_KIND,
        "<I",
        0,
        "field kind is 0, not 1 (book), 2 (trade), 4 (ticker) or 5 (candle)",
    ),
    ("kind", L.H_KIND, "<I", 3, "field kind is 3 (status)"),
    ("kind", L.H_KIND, "<I", 0xFFFFFFFF, "field kind is 4294967295"),
    ("kind", L.H_KIND, "<I", 2, "field depth is 20, not 0 for this kind"),
    ("capacity", L.H_CAPACITY, "<Q", 0, "field capacity is 0, not a power of two"),
    ("capacity", L.H_CAPACITY, "<Q", 24, "field capacity is 24, not a power of two"),
    ("capacity", L.H_CAPACITY, "<Q", 1 << 25, "field capacity is 33554432, not a power"),
    ("capacity", L.H_CAPACITY, "<Q", 32, f"field slots_offset is {SLOTS}, its table runs past"),
    ("capacity", L.H_CAPACITY, "<Q", 1 << 63, "field capacity is 9223372036854775808"),
    ("record_size", L.H_RECORD_SIZE, "<I", 0, "field record_size is 0, not 720"),
    ("record_size", L.H_RECORD_SIZE, "<I", 1 << 31, "field record_size is 2147483648"),
    ("depth", L.H_DEPTH, "<I", 0, "field depth is 0, not in 1..1000 for a book ring"),
    ("depth", L.H_DEPTH, "<I", 1001, "field depth is 1001, not in 1..1000"),
    ("depth", L.H_DEPTH, "<I", 21, "field record_size is 720, not 752"),
    ("max_symbols", L.H_MAX_SYMBOLS, "<I", 0, "field max_symbols is 0, not in 1..65536"),
    ("max_symbols", L.H_MAX_SYMBOLS, "<I", 65537, "field max_symbols is 65537"),
    ("max_symbols", L.H_MAX_SYMBOLS, "<I", 2**32 - 1, "field max_symbols is 4294967295"),
    ("max_symbols", L.H_MAX_SYMBOLS, "<I", 129, f"field latest_offset is {LATEST}, overlapping"),
    ("n_symbols", L.H_N_SYMBOLS, "<I", 5, "field n_symbols is 5, more than max_symbols 4"),
    ("n_symbols", L.H_N_SYMBOLS, "<I", 30_000_000, "field n_symbols is 30000000"),
    ("n_counters", L.H_N_COUNTERS, "<I", 1025, "field n_counters is 1025, more than 1024"),
    ("slot_size", L.H_SLOT_SIZE, "<I", 720, "field slot_size is 720, not 768"),
    ("slot_size", L.H_SLOT_SIZE, "<I", 0, "field slot_size is 0, not 768"),
    ("symbols_offset", L.H_SYMBOLS_OFFSET, "<Q", 0, "field symbols_offset is 0, overlapping"),
    ("symbols_offset", L.H_SYMBOLS_OFFSET, "<Q", 4100, "field symbols_offset is 4100, not 64"),
    ("symbols_offset", L.H_SYMBOLS_OFFSET, "<Q", 2**64 - 64, "field symbols_offset is 1844"),
    ("latest_offset", L.H_LATEST_OFFSET, "<Q", 4096, "field latest_offset is 4096, overlapp"),
    ("latest_offset", L.H_LATEST_OFFSET, "<Q", 8200, "field latest_offset is 8200, not 64"),
    ("latest_offset", L.H_LATEST_OFFSET, "<Q", 2**64 - 64, "its table runs past the file"),
    ("slots_offset", L.H_SLOTS_OFFSET, "<Q", 1 << 40, "field slots_offset is 1099511627776"),
    ("slots_offset", L.H_SLOTS_OFFSET, "<Q", 2**64 - 64, "field slots_offset is 1844674407"),
    ("slots_offset", L.H_SLOTS_OFFSET, "<Q", 8192, "field slots_offset is 8192, overlapping"),
    (
        "slots_offset",
        L.H_SLOTS_OFFSET,
        "<Q",
        SLOTS + 64,
        f"slots_offset is {SLOTS + 64}, its table",
    ),
    ("segment_size", L.H_SEGMENT_SIZE, "<Q", 1 << 44, "field segment_size is 17592186044416"),
    ("segment_size", L.H_SEGMENT_SIZE, "<Q", 0, f"field segment_size is 0, the file has {SIZE}"),
]


@pytest.mark.parametrize(
    ("field", "offset", "fmt", "value", "says"),
    OUT_OF_BOUNDS,
    ids=[f"{f}={v}" for f, _, _, v, _ in OUT_OF_BOUNDS],
)
def test_c_reader_refuses_each_header_field_out_of_bounds(
    instance: str,
    tail_binary: Path,
    good_segment: bytes,
    field: str,
    offset: int,
    fmt: str,
    value: int,
    says: str,
) -> None:
    data = bytearray(good_segment)
    struct.pack_into(fmt, data, offset, value)
    _plant(instance, bytes(data))
    err = _refused(tail_binary, instance)
    assert says in err, err


def test_c_reader_refuses_a_truncated_segment(
    instance: str, tail_binary: Path, good_segment: bytes
) -> None:
    _plant(instance, good_segment[: len(good_segment) - 4096])
    err = _refused(tail_binary, instance)
    assert f"field segment_size is {SIZE}, the file has {SIZE - 4096} bytes" in err


def test_c_reader_refuses_bad_names(tail_binary: Path) -> None:
    for instance, ring, says in [
        ("../etc", "books", "instance name '../etc'"),
        ("x", "../../etc/passwd", "ring name '../../etc/passwd'"),
        ("x", "books/..", "ring name 'books/..'"),
        ("", "books", "instance name ''"),
    ]:
        proc = subprocess.run(
            [str(tail_binary), instance, ring, "1"], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 2 and says in proc.stderr, proc


@pytest.mark.timeout(900)
def test_c_reader_survives_10000_mutated_headers(
    instance: str, fuzz_binary: Path, good_segment: bytes, tmp_path: Path
) -> None:
    """No crash, no hang over 2 s, every refusal an error naming the segment."""
    template = tmp_path / "template"
    template.write_bytes(good_segment)
    proc = subprocess.run(
        [str(fuzz_binary), str(template), instance, "fuzz", "10000", "20261201"],
        capture_output=True,
        text=True,
        timeout=850,
    )
    summary = proc.stdout.strip()
    assert proc.returncode == 0, (summary, proc.stderr)
    counts = dict(item.split("=") for item in summary.split())
    assert counts["cases"] == "10000"
    assert counts["crashes"] == counts["hangs"] == counts["unnamed"] == "0"
    assert int(counts["accepted"]) > 0 and int(counts["refused"]) > 0


def test_c_reader_reads_tickers_and_candles(instance: str, tmp_path: Path) -> None:
    """The generated structs and bits read what the Python writers put in both new kinds."""
    from mdpipe.candles import CandleBuilder
    from mdpipe.ingest.tickers import TickerState
    from mdpipe.venues.base import MarkPrice

    binary = _compile(tmp_path / "ticker_latest", ROOT / "tests" / "c" / "ticker_latest.c")
    syms = ["BTCUSDT", "ETHUSDT"]
    s = 1_000_000_000
    with (
        RingWriter.create(instance, "tickers.x.0", "ticker", symbols=syms, capacity=16) as tw,
        RingWriter.create(instance, "candles_1s.x.0", "candle", symbols=syms, capacity=16) as cw,
    ):
        values = {"mark_price": 101.5, "funding_rate": -0.000125, "next_funding_ts_ns": 7 * s}
        TickerState(tw, 2).apply(1, MarkPrice("ETHUSDT", 1, 101.5, values), 5)
        b = CandleBuilder(cw, s, 2, start_ns=0, grace_ns=0)
        for tid, (t, px) in enumerate([(3.1, 10.0), (3.5, 12.0), (4.2, 11.0), (3.9, 9.0)]):
            b.on_trade(1, int(t * s), 0, tid, tid, tid, px, 0.5, True)
        res = subprocess.run(
            [str(binary), instance, "tickers.x.0", "candles_1s.x.0", "ETHUSDT"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"mark=101.500 funding=-0.000125 next={7 * s} oi_sent=0",
        f"open_ts={3 * s} o=10.00 h=12.00 l=9.00 c=12.00 v=1.500 n=3 rev=1 amended=1",
    ]
