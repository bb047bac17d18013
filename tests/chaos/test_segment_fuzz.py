"""Segment headers mutated field by field against attach(), stats and /metrics.

Every case is a file of ours in /dev/shm (so it passes the ownership checks and reaches the
header validation) holding a real segment with one mutation. Each reader must either read it
or refuse it with a LayoutError (or say the ring is not there): never another exception, a
hang over 10 s, or an allocation over 64 MB.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import signal
import struct

import pytest
from prometheus_client.exposition import generate_latest

from mdpipe.metrics import registry_for
from mdpipe.readers import LayoutError, NoSuchRingError, attach
from mdpipe.shm import layout as L
from mdpipe.shm.segment import iter_status, shm_path
from mdpipe.shm.writer import RingWriter
from mdpipe.stats import NotRunningError, collect

# Every structured case (1,786: each header field at its edges, truncations) and random ones
# up to 5,000 in `make test`; MDPIPE_FUZZ_CASES=10000 is the longer run.
CASES_WANTED = int(os.environ.get("MDPIPE_FUZZ_CASES", "5000"))
RING = "books.f.0"
HANG_S = 10  # seconds of wall clock a case may take before it counts as a hang


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang


def _template(instance: str) -> bytes:
    with RingWriter.create(
        instance,
        RING,
        "book",
        symbols=["BTCUSDT", "ETHUSDT"],
        capacity=8,
        depth=4,
        counters=["frames"],
    ) as w:
        for k in range(11):
            w.bids[0] = (100.0 + k, 1.0)
            w.asks[0] = (101.0 + k, 1.0)
            w.commit_book(k % 2, L.FLAG_SYNCED, k, k, k, k, 0, 1, 1)
    with open(shm_path(instance, RING), "rb") as f:
        return f.read()


def _cases(template: bytes, rng: random.Random):
    """(description, bytes) of every mutation."""
    interesting_u32 = [
        0,
        1,
        2,
        3,
        7,
        8,
        63,
        64,
        4095,
        4096,
        65535,
        65536,
        2**31 - 1,
        2**31,
        2**32 - 1,
    ]
    interesting_u64 = interesting_u32 + [2**32, 2**40, 2**48, 2**63 - 1, 2**63, 2**64 - 1]
    for field in L.HEADER_FIELDS:
        if field.ctype in ("u32", "u64"):
            fmt, values = (
                ("<I", interesting_u32) if field.ctype == "u32" else ("<Q", interesting_u64)
            )
            bits = 32 if field.ctype == "u32" else 64
            values = values + [rng.getrandbits(bits) for _ in range(40)]
            for v in values:
                raw = bytearray(template)
                struct.pack_into(fmt, raw, field.offset, v)
                yield f"{field.name}={v}", bytes(raw)
        else:
            for _ in range(40):
                raw = bytearray(template)
                n = rng.randint(1, field.size)
                at = field.offset + rng.randint(0, field.size - n)
                raw[at : at + n] = rng.randbytes(n)
                yield f"{field.name} random {n} bytes at {at}", bytes(raw)
            raw = bytearray(template)
            raw[field.offset : field.offset + field.size] = b"\xff" * field.size
            yield f"{field.name} all 0xff", bytes(raw)
    # Symbol table, latest table and slots: garbage where readers copy from.
    for _ in range(400):
        raw = bytearray(template)
        at = rng.randrange(L.PAGE, len(raw) - 8)
        n = rng.randint(1, 64)
        raw[at : at + n] = rng.randbytes(min(n, len(raw) - at))
        yield f"body random {n} bytes at {at}", bytes(raw)
    # Truncated and extended files.
    for size in (
        0,
        1,
        100,
        4095,
        4096,
        8192,
        len(template) - 4096,
        len(template) - 1,
        len(template) + 4096,
    ):
        yield f"file size {size}", template[:size] + b"\0" * max(0, size - len(template))
    # Random header bytes anywhere, several at once.
    while True:
        raw = bytearray(template)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(0, L.PAGE)
            raw[at] = rng.randrange(256)
        yield "random header bytes", bytes(raw)


def _read_everything(instance: str) -> None:
    """What attach, stats and /metrics do with a ring: each either works or says LayoutError."""
    try:
        with attach(instance, "books") as r:
            for sym in r.symbols:
                r.top(sym)
                r.latest(sym)
                r.latest(sym, levels=1)
            r.seek_oldest()
            r.poll()
            r.read_batch(16)
    except (LayoutError, NoSuchRingError, KeyError):
        pass
    list(iter_status(instance))
    with contextlib.suppress(NotRunningError):  # `mdpipe stats` on an instance with no valid ring
        collect(instance, interval=0.0)
    generate_latest(registry_for(instance))


@pytest.mark.timeout(900)
def test_mutated_headers_are_read_or_refused_never_crash_hang_or_balloon(instance: str) -> None:
    template = _template(instance)
    path = shm_path(instance, RING)
    rng = random.Random(20261201)
    old = signal.signal(signal.SIGALRM, _alarm)
    # The process's peak RSS can only grow: a case that allocated over 64 MB shows in it.
    # (tracemalloc would see each case's peak, but slows the run sixfold.)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    failures: list[str] = []
    n = 0
    try:
        for what, raw in _cases(template, rng):
            if n >= CASES_WANTED:
                break
            n += 1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, raw)
            os.close(fd)
            # A case takes milliseconds, a second where attach waits for a header being
            # written; 10 s of wall clock leaves room for a loaded machine, not for a hang.
            signal.alarm(HANG_S)
            try:
                _read_everything(instance)
            except Hang:
                failures.append(f"{what}: hung over {HANG_S} s")
            except Exception as exc:  # the point of the test: anything untyped is a failure
                failures.append(f"{what}: {type(exc).__name__}: {exc}")
            finally:
                signal.alarm(0)
            grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline
            if grown_kib > 64 << 10:
                failures.append(f"{what}: peak memory grew by {grown_kib} KiB")
                baseline += grown_kib
            if len(failures) > 20:
                break
    finally:
        signal.signal(signal.SIGALRM, old)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    assert not failures, "\n".join(failures)
    assert n >= CASES_WANTED
