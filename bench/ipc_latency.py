"""One-way latency of a 20-level book from a writer to a reader in another process.

The mdpipe ring against Redis pub/sub, multiprocessing.Pipe and ZeroMQ ipc, each measured
in this same run with the same 720-byte book record, writer and reader pinned to their own
cores, each transport busy-polling where it allows it and blocking as well. Also the cost
of latest(), top() and a writer commit, and whether 10 readers slow the writer.

Run: .venv/bin/python bench/ipc_latency.py [--messages N] [--interval-us U]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable

import numpy as np

from mdpipe.readers import attach
from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter

CTX = mp.get_context("spawn")
DEPTH = 20
WRITER_CORE, READER_CORE = 0, 1
COMMIT_TS = L.book_dtype(DEPTH).fields["commit_ts_ns"][1]


def pin(core: int) -> None:
    """Pin this process to one core (children inherit the parent's mask, so ask the machine)."""
    if core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


def percentiles(lat_ns: np.ndarray) -> dict[str, float]:
    us = lat_ns / 1000.0
    return {
        "p50": float(np.percentile(us, 50)),
        "p99": float(np.percentile(us, 99)),
        "p99.9": float(np.percentile(us, 99.9)),
        "n": len(us),
    }


def book_record(k: int) -> np.ndarray:
    rec = np.zeros(1, L.book_dtype(DEPTH))
    rec["bids"][0, :, 0] = 61800.2 - np.arange(DEPTH) * 0.1
    rec["bids"][0, :, 1] = 1.5
    rec["asks"][0, :, 0] = 61800.3 + np.arange(DEPTH) * 0.1
    rec["asks"][0, :, 1] = 2.5
    rec["last_update_id"] = k
    return rec


def pace(next_ns: int) -> None:
    while time.perf_counter_ns() < next_ns:
        pass


# ----- readers (each in its own process, pinned to READER_CORE) ---------------------------


def ring_reader(instance: str, idle: str, n: int, ready, out) -> None:
    pin(READER_CORE)
    r = attach(instance, "books", wait=True, timeout=30, idle=idle)
    lat = np.empty(n, np.int64)
    ready.set()
    for i, rec in enumerate(r):
        now = time.time_ns()
        lat[i] = now - rec["commit_ts_ns"]
        if i == n - 1:
            break
    out.put((lat, r.lost))


def pipe_reader(conn, mode: str, n: int, ready, out) -> None:
    pin(READER_CORE)
    lat = np.empty(n, np.int64)
    buf = bytearray(L.book_dtype(DEPTH).itemsize)
    ready.set()
    for i in range(n):
        if mode == "spin":
            while not conn.poll(0):
                pass
        conn.recv_bytes_into(buf)
        now = time.time_ns()
        lat[i] = now - int.from_bytes(buf[COMMIT_TS : COMMIT_TS + 8], "little")
    out.put((lat, 0))


def zmq_reader(endpoint: str, mode: str, n: int, ready, out) -> None:
    import zmq

    pin(READER_CORE)
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.connect(endpoint)
    lat = np.empty(n, np.int64)
    ready.set()
    for i in range(n):
        if mode == "spin":
            while True:
                try:
                    msg = sock.recv(zmq.NOBLOCK, copy=False)
                    break
                except zmq.Again:
                    pass
        else:
            msg = sock.recv(copy=False)
        now = time.time_ns()
        buf = msg.buffer
        lat[i] = now - int.from_bytes(buf[COMMIT_TS : COMMIT_TS + 8], "little")
    out.put((lat, 0))


def redis_reader(url: str, mode: str, n: int, ready, out) -> None:
    import redis

    pin(READER_CORE)
    client = redis.Redis.from_url(url)
    ps = client.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("bench:book")
    while ps.get_message(timeout=1.0) is None and not ps.subscribed:
        pass
    lat = np.empty(n, np.int64)
    ready.set()
    i = 0
    while i < n:
        msg = ps.get_message(timeout=0 if mode == "spin" else 1.0)
        if msg is None:
            continue
        now = time.time_ns()
        data = msg["data"]
        lat[i] = now - int.from_bytes(data[COMMIT_TS : COMMIT_TS + 8], "little")
        i += 1
    out.put((lat, 0))


# ----- writers (this process, pinned to WRITER_CORE) --------------------------------------


def run_pair(
    reader: Callable, reader_args: tuple, send: Callable[[int], None], n: int, interval_ns: int
) -> tuple[np.ndarray, int]:
    ready, out = CTX.Event(), CTX.Queue()
    proc = CTX.Process(target=reader, args=(*reader_args, n, ready, out))
    proc.start()
    if not ready.wait(60):
        raise RuntimeError(f"{reader.__name__} did not start")
    time.sleep(0.3)
    next_ns = time.perf_counter_ns()
    for k in range(n):
        next_ns += interval_ns
        pace(next_ns)
        send(k)
    lat, lost = out.get(timeout=120)
    proc.join(30)
    return lat, lost


def book_writer() -> tuple[str, RingWriter]:
    """A one-symbol books ring of a fresh instance, its staged record a full 20-level book."""
    instance = f"bench{uuid.uuid4().hex[:8]}"
    w = RingWriter.create(instance, "books", "book", symbols=["BTCUSDT"], capacity=1 << 16)
    rec = book_record(0)
    w.bids[:] = rec["bids"][0]
    w.asks[:] = rec["asks"][0]
    return instance, w


def measure_ring(n: int, interval_ns: int, idle: str) -> tuple[np.ndarray, int]:
    instance, w = book_writer()
    try:
        return run_pair(
            ring_reader,
            (instance, idle),
            lambda k: w.commit_book(0, 1, 0, 0, k, k, 0, DEPTH, DEPTH),
            n,
            interval_ns,
        )
    finally:
        w.close(unlink=True)


def measure_c_reader(n: int, interval_ns: int) -> dict[str, float] | None:
    """The same ring read from C (readers/c/mdpipe_reader.h); None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c", "ring_latency.c")
    exe = os.path.join(tempfile.mkdtemp(), "ring_latency")
    subprocess.run([cc, "-O2", "-o", exe, src, "-lrt"], check=True)
    instance, w = book_writer()
    try:
        proc = subprocess.Popen(
            ["taskset", "-c", str(READER_CORE), exe, instance, "books", str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "attached"
        time.sleep(0.3)
        next_ns = time.perf_counter_ns()
        for k in range(n):
            next_ns += interval_ns
            pace(next_ns)
            w.commit_book(0, 1, 0, 0, k, k, 0, DEPTH, DEPTH)
        p50, p99, p999, _lost = proc.communicate(timeout=60)[0].split()
        return {"p50": float(p50), "p99": float(p99), "p99.9": float(p999), "n": n}
    finally:
        w.close(unlink=True)


def measure_pipe(n: int, interval_ns: int, mode: str) -> tuple[np.ndarray, int]:
    a, b = CTX.Pipe(duplex=False)
    rec = book_record(0)
    raw = bytearray(rec.tobytes())

    def send(k: int) -> None:
        raw[COMMIT_TS : COMMIT_TS + 8] = time.time_ns().to_bytes(8, "little")
        b.send_bytes(raw)

    try:
        return run_pair(pipe_reader, (a, mode), send, n, interval_ns)
    finally:
        a.close()
        b.close()


def measure_zmq(n: int, interval_ns: int, mode: str) -> tuple[np.ndarray, int]:
    import zmq

    path = os.path.join(tempfile.mkdtemp(), "bench.ipc")
    endpoint = f"ipc://{path}"
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.bind(endpoint)
    raw = bytearray(book_record(0).tobytes())

    def send(k: int) -> None:
        raw[COMMIT_TS : COMMIT_TS + 8] = time.time_ns().to_bytes(8, "little")
        sock.send(raw, copy=True)

    try:
        return run_pair(zmq_reader, (endpoint, mode), send, n, interval_ns)
    finally:
        sock.close(linger=0)


def measure_redis(url: str, n: int, interval_ns: int, mode: str) -> tuple[np.ndarray, int]:
    import redis

    client = redis.Redis.from_url(url)
    raw = bytearray(book_record(0).tobytes())

    def send(k: int) -> None:
        raw[COMMIT_TS : COMMIT_TS + 8] = time.time_ns().to_bytes(8, "little")
        client.publish("bench:book", bytes(raw))

    return run_pair(redis_reader, (url, mode), send, n, interval_ns)


@contextlib.contextmanager
def redis_server():
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (make bench installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


# ----- per-call costs ---------------------------------------------------------------------


def per_call_ns(fn: Callable[[], object], calls: int = 200_000, batch: int = 1000) -> float:
    """Median over batches of the mean cost per call (loop overhead included)."""
    means = []
    for _ in range(calls // batch):
        t = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        means.append((time.perf_counter_ns() - t) / batch)
    return float(np.median(means))


def measure_call_costs() -> dict[str, float]:
    instance, w = book_writer()
    try:
        commit_ns = []
        for k in range(100_000):
            t = time.perf_counter_ns()
            w.commit_book(0, 1, 0, 0, k, k, 0, DEPTH, DEPTH)
            commit_ns.append(time.perf_counter_ns() - t)
        r = attach(instance, "books")
        costs = {
            "commit_book p50": float(np.percentile(commit_ns, 50)),
            "latest()": per_call_ns(lambda: r.latest("BTCUSDT")),
            "top()": per_call_ns(lambda: r.top("BTCUSDT")),
        }
        r.close()
        return costs
    finally:
        w.close(unlink=True)


def spinning_reader(instance: str, stop, ready) -> None:
    pin(READER_CORE)
    r = attach(instance, "books", wait=True, timeout=30)
    ready.set()
    while not stop.is_set():
        for _ in range(10_000):
            r.poll()


def measure_reader_impact(n_readers: int, commits: int = 300_000) -> float:
    """Writer commits per second with n readers spinning on the other core."""
    instance = f"bench{uuid.uuid4().hex[:8]}"
    w = RingWriter.create(instance, "books", "book", symbols=["BTCUSDT"], capacity=1 << 16)
    stop = CTX.Event()
    procs = []
    try:
        for _ in range(n_readers):
            ready = CTX.Event()
            p = CTX.Process(target=spinning_reader, args=(instance, stop, ready))
            p.start()
            ready.wait(60)
            procs.append(p)
        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            for k in range(commits):
                w.commit_book(0, 1, 0, 0, k, k, 0, DEPTH, DEPTH)
            best = max(best, commits / (time.perf_counter() - t))
        return best
    finally:
        stop.set()
        for p in procs:
            p.join(10)
        w.close(unlink=True)


# ----- report -----------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--interval-us", type=float, default=100.0)
    args = ap.parse_args()
    n, interval_ns = args.messages, int(args.interval_us * 1000)
    pin(WRITER_CORE)
    print(
        f"one-way latency, {n} messages of {L.book_dtype(DEPTH).itemsize} bytes "
        f"every {args.interval_us:g} us, writer core {WRITER_CORE}, reader core {READER_CORE}"
    )
    results: dict[str, dict[str, float]] = {}
    lost = 0
    for idle in ("spin", "yield"):
        lat, lost_here = measure_ring(n, interval_ns, idle)
        lost += lost_here
        results[f"mdpipe ring ({idle})"] = percentiles(lat)
    from_c = measure_c_reader(n, interval_ns)
    if from_c is not None:
        results["mdpipe ring, C reader (spin)"] = from_c
    for mode in ("spin", "block"):
        results[f"multiprocessing.Pipe ({mode})"] = percentiles(
            measure_pipe(n, interval_ns, mode)[0]
        )
        results[f"ZeroMQ ipc PUSH/PULL ({mode})"] = percentiles(
            measure_zmq(n, interval_ns, mode)[0]
        )
    with redis_server() as url:
        for mode in ("spin", "block"):
            lat, _ = measure_redis(url, max(n // 4, 1000), interval_ns, mode)
            results[f"Redis pub/sub ({mode})"] = percentiles(lat)

    ring = results["mdpipe ring (spin)"]
    best_other = min(
        (v for k, v in results.items() if not k.startswith("mdpipe")), key=lambda v: v["p50"]
    )
    print(f"\n{'transport':34} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} {'p50 vs ring':>12}")
    for name, v in results.items():
        print(
            f"{name:34} {v['p50']:9.2f} {v['p99']:9.2f} {v['p99.9']:9.2f} {v['p50'] / ring['p50']:11.1f}x"
        )
    print(f"(ring readers lost {lost} records to lapping)")

    costs = measure_call_costs()
    print(f"\n{'per call':34} {'ns':>9}")
    for name, ns in costs.items():
        print(f"{name:34} {ns:9.0f}")

    base = measure_reader_impact(0)
    loaded = measure_reader_impact(10)
    slowdown = (base - loaded) / base * 100
    print(
        f"\nwriter commits/s: no readers {base:,.0f}; 10 spinning readers {loaded:,.0f} "
        f"({slowdown:+.1f}% slower)"
    )

    checks = [
        ("ring p50 <= 1 us", ring["p50"] <= 1.0, f"{ring['p50']:.2f} us"),
        ("ring p99 <= 5 us", ring["p99"] <= 5.0, f"{ring['p99']:.2f} us"),
        (
            "ring >= 30x best other (p50)",
            best_other["p50"] / ring["p50"] >= 30,
            f"{best_other['p50'] / ring['p50']:.1f}x",
        ),
        ("latest() <= 1 us", costs["latest()"] <= 1000, f"{costs['latest()']:.0f} ns"),
        ("top() <= 0.4 us", costs["top()"] <= 400, f"{costs['top()']:.0f} ns"),
        (
            "commit <= 2 us p50",
            costs["commit_book p50"] <= 2000,
            f"{costs['commit_book p50']:.0f} ns",
        ),
        ("10 readers slow writer < 5%", slowdown < 5, f"{slowdown:+.1f}%"),
    ]
    print(f"\n{'target':34} {'measured':>12}  result")
    for name, ok, measured in checks:
        print(f"{name:34} {measured:>12}  {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
