"""Ring -> Redis -> subscriber: sustained messages/s and latency of the mdpipe publisher.

mdpipe's publisher (`python -m mdpipe.publisher`, batched reads, pipelined PUBLISH) against
the loop a user would otherwise write: poll one record, build its dict, orjson, one PUBLISH
per message. Both read the same rings written by a writer process and send the same JSON to
a redis-server this script starts on a free port; a subscriber in this process counts what
arrives (raw socket + hiredis, so the subscriber is not the bottleneck).

- sustained: the writer commits a burst into a ring large enough to hold it; rate = messages
  received / time from the first to the last one at the subscriber. Trades (never conflated)
  and 20-level books over 1000 symbols (so a batch never holds two books of one symbol), their
  prices on a 0.1 tick as a venue's decimal text parses. The subscriber's Redis output buffer
  may grow to 512 MB (default 32 MB) so a subscriber descheduled on a busy machine is not
  disconnected mid-burst.
- latency: the writer commits 10,000 trades/s; subscriber receive time minus the record's
  ring commit time (the payload's "timestamp"), p50 / p99.

- into Redis: the same mdpipe publisher into a single redis-server and into a local Redis
  Cluster of 3 masters (sharded pub/sub), timed by its own count of confirmed messages.

Run: .venv/bin/python bench/publisher_throughput.py [--runs N] [--messages N] [--seconds S]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import hiredis
import numpy as np
import orjson
import redis

from mdpipe.readers import attach
from mdpipe.shm import layout as L
from mdpipe.shm.segment import read_status, unlink_instance
from mdpipe.shm.writer import RingWriter

CTX = mp.get_context("spawn")
REPO = Path(__file__).resolve().parent.parent
DEPTH = 20
BOOK_SYMBOLS = [f"S{k:04d}USDT" for k in range(1000)]
TRADE_SYMBOLS = ["BTCUSDT", "ETHUSDT"]
TARGET_RATE = 50_000
TARGET_RATIO = 5.0
TARGET_P99_US = 2_000
LATENCY_RATE = 10_000


# ----- processes --------------------------------------------------------------------------


def writer(instance: str, kind: str, n: int, rate: float, capacity: int, created, go) -> None:
    """Create the ring, wait for `go`, commit n records (as fast as possible when rate is 0)."""
    symbols = BOOK_SYMBOLS if kind == "book" else TRADE_SYMBOLS
    w = RingWriter.create(
        instance,
        "books.bench.0" if kind == "book" else "trades.bench.0",
        kind,
        symbols=symbols,
        capacity=capacity,
        depth=DEPTH,
        max_symbols=len(symbols),
        exchange="binance-futures",
    )
    if kind == "book":  # prices on the 0.1 tick, as a venue's decimal text parses to
        w.bids[:, 0] = np.round(61_800.2 - np.arange(DEPTH) * 0.1, 1)
        w.bids[:, 1] = 1.5
        w.asks[:, 0] = np.round(61_800.3 + np.arange(DEPTH) * 0.1, 1)
        w.asks[:, 1] = 0.75
    created.set()
    go.wait()
    n_sym = len(symbols)
    start = time.perf_counter()
    i = 0
    while i < n:
        if rate:
            due = min(n, int((time.perf_counter() - start) * rate) + 1)
            if i >= due:
                time.sleep(0.0002)
                continue
        else:
            due = n
        while i < due:
            now = time.time_ns()
            if kind == "book":
                w.commit_book(i % n_sym, L.FLAG_SYNCED, now, now, i, i, i, DEPTH, DEPTH)
            else:
                w.commit_trade(i % n_sym, 0, now, now, now, i, i, i, 61_800.5, 0.013, 1)
            i += 1
    w.close()


def naive_publisher(instance: str, url: str, kind: str, levels: int, ready, stop) -> None:
    """The baseline: one record at a time, one PUBLISH (one round trip) per message."""
    r = redis.Redis.from_url(url)
    ring = "books" if kind == "book" else "trades"
    reader = attach(instance, ring, kind=kind, wait=True, timeout=30)
    symbols = reader.symbols
    exchange = "binance-futures"
    ready.set()
    while not stop.is_set():
        rec = reader.poll()
        if rec is None:
            time.sleep(0.0002)
            continue
        sym = symbols[int(rec["symbol_id"])]
        if kind == "book":
            nb, na = min(int(rec["bid_count"]), levels), min(int(rec["ask_count"]), levels)
            msg = {
                "symbol": sym,
                "exchange": exchange,
                "bids": rec["bids"][:nb].tolist(),
                "asks": rec["asks"][:na].tolist(),
                "first_update_id": int(rec["first_update_id"]),
                "last_update_id": int(rec["last_update_id"]),
                "seq": int(rec["symbol_seq"]),
                "synced": bool(int(rec["flags"]) & L.FLAG_SYNCED),
                "exchange_ts": int(rec["exchange_ts_ns"]),
                "timestamp": int(rec["commit_ts_ns"]),
            }
            r.publish(f"orderbook:{sym}", orjson.dumps(msg))
        else:
            side = int(rec["side"])
            msg = {
                "symbol": sym,
                "exchange": exchange,
                "trade_id": int(rec["trade_id"]),
                "price": float(rec["price"]),
                "quantity": float(rec["qty"]),
                "side": "buy" if side > 0 else "sell",
                "is_buyer_maker": bool(int(rec["flags"]) & L.FLAG_BUYER_MAKER),
                "exchange_ts": int(rec["exchange_ts_ns"]),
                "timestamp": int(rec["commit_ts_ns"]),
            }
            r.publish(f"trades:{sym}", orjson.dumps(msg))
    reader.close()


# ----- plumbing ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server(port: int | None = None, extra: tuple[str, ...] = ()) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (make bench installs it)")
    port = port or free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp, "--client-output-buffer-limit", "pubsub 512mb 256mb 60", *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("redis-server did not start") from None
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.bind(("127.0.0.1", port + 10000))
                return port


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[str]:
    """A local Redis Cluster of `masters` redis-servers; yields the first node's URL."""
    ports = [cluster_port() for _ in range(masters)]
    flags = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(redis_server(p, flags)) for p in ports]
        cli = shutil.which("redis-cli") or "redis-cli"
        addrs = [f"127.0.0.1:{p}" for p in ports]
        subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for p in ports:
            client = redis.Redis(port=p)
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                time.sleep(0.05)
            client.close()
        yield urls[0]


class Subscriber:
    """PSUBSCRIBE over a raw socket, replies parsed by hiredis: cheap enough to count 100k+/s."""

    def __init__(self, url: str, pattern: str) -> None:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.reader = hiredis.Reader()
        p = pattern.encode()
        self.sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(p), p))
        while True:
            self.reader.feed(self.sock.recv(65536))
            if self.reader.gets() is not False:
                break

    def collect(
        self, n: int, *, stamps: bool, idle_timeout: float = 10.0
    ) -> tuple[int, float, np.ndarray]:
        """Receive until n messages or idle_timeout without one.

        Returns (count, seconds from first to last, latencies in ns when stamps).
        """
        self.sock.settimeout(idle_timeout)
        got = 0
        first = last = 0.0
        lat = np.empty(n, np.int64)
        reader, sock = self.reader, self.sock
        while got < n:
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                break
            if not data:
                break
            now_ns = time.time_ns()
            reader.feed(data)
            while (msg := reader.gets()) is not False:
                if stamps:
                    lat[got] = now_ns - orjson.loads(msg[3])["timestamp"]
                got += 1
            if got:
                last = time.perf_counter()
                if not first:
                    first = last
        return got, last - first, lat[:got]

    def close(self) -> None:
        self.sock.close()


def start_mdpipe_publisher(instance: str, url: str, conf: Path) -> subprocess.Popen:
    conf.write_text(
        f'instance = "{instance}"\n[redis]\nurl = "{url}"\n[publisher]\nlevels = {DEPTH}\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdpipe.publisher", "--config", str(conf)],
        cwd=REPO,
        env=dict(os.environ, MDPIPE_LOG_LEVEL="warning"),
    )
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(Exception):
            c = read_status(instance, "publisher").counters
            if c.get("g_rings") == 1 and c.get("g_redis_up") == 1:
                return proc
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the mdpipe publisher did not start")
        time.sleep(0.02)


def run_case(
    url: str, impl: str, kind: str, n: int, rate: float, tmp: Path
) -> tuple[int, float, np.ndarray]:
    """One writer, one publisher (mdpipe or naive), one subscriber; returns collect()'s result."""
    instance = f"bench{uuid.uuid4().hex[:8]}"
    created, go, ready, stop = CTX.Event(), CTX.Event(), CTX.Event(), CTX.Event()
    capacity = 1 << max(12, (n - 1).bit_length())
    w = CTX.Process(target=writer, args=(instance, kind, n, rate, capacity, created, go))
    w.start()
    created.wait(30)
    pub: subprocess.Popen | None = None
    naive = None
    try:
        if impl == "mdpipe":
            pub = start_mdpipe_publisher(instance, url, tmp / f"{instance}.toml")
        else:
            naive = CTX.Process(
                target=naive_publisher, args=(instance, url, kind, DEPTH, ready, stop)
            )
            naive.start()
            ready.wait(30)
        sub = Subscriber(url, "orderbook:*" if kind == "book" else "trades:*")
        go.set()
        result = sub.collect(n, stamps=bool(rate))
        sub.close()
        return result
    finally:
        w.join(60)
        if pub is not None:
            pub.terminate()
            pub.wait(30)
        if naive is not None:
            stop.set()
            naive.join(30)
        unlink_instance(instance)


def run_into(url: str, kind: str, n: int, tmp: Path) -> float:
    """Messages/s the mdpipe publisher gets confirmed by Redis (single or cluster) for a burst.

    Timed by the publisher's own published counter, so it needs no subscriber on every shard.
    """
    instance = f"bench{uuid.uuid4().hex[:8]}"
    created, go = CTX.Event(), CTX.Event()
    capacity = 1 << max(12, (n - 1).bit_length())
    w = CTX.Process(target=writer, args=(instance, kind, n, 0, capacity, created, go))
    w.start()
    created.wait(30)
    counter = "books_published" if kind == "book" else "trades_published"
    pub = start_mdpipe_publisher(instance, url, tmp / f"{instance}.toml")
    try:
        go.set()
        t0 = time.perf_counter()
        deadline = time.monotonic() + 120
        while read_status(instance, "publisher").counters[counter] < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"the publisher did not publish {n} {kind}s into {url}")
            time.sleep(0.001)
        return n / (time.perf_counter() - t0)
    finally:
        w.join(60)
        pub.terminate()
        pub.wait(30)
        unlink_instance(instance)


def pct(lat_ns: np.ndarray, q: float) -> float:
    return float(np.percentile(lat_ns, q)) / 1000.0 if len(lat_ns) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000, help="burst size for mdpipe")
    ap.add_argument("--naive", type=int, default=30_000, help="burst size for the naive loop")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each latency run")
    ap.add_argument("--runs", type=int, default=3, help="best of this many runs per measure")
    args = ap.parse_args()
    kinds = (("trade", "trades"), ("book", "books, 20 levels"))
    rate: dict[tuple[str, str], float] = {}
    lat: dict[str, np.ndarray] = {}
    n_lat = int(LATENCY_RATE * args.seconds)
    load_before = os.getloadavg()[0]
    into: dict[tuple[str, str], float] = {}
    with (
        redis_server() as url,
        redis_cluster() as cluster_url,
        tempfile.TemporaryDirectory() as tmp_dir,
    ):
        tmp = Path(tmp_dir)
        for _ in range(args.runs):
            for kind, label in kinds:
                for impl, n in (("mdpipe", args.messages), ("naive", args.naive)):
                    got, secs, _ = run_case(url, impl, kind, n, 0, tmp)
                    if got < n:
                        print(f"warning: {impl} {label}: {got} of {n} arrived", file=sys.stderr)
                    r = (got - 1) / secs if secs > 0 else 0.0
                    rate[impl, kind] = max(rate.get((impl, kind), 0.0), r)
            for impl in ("mdpipe", "naive"):
                got, _, ns = run_case(url, impl, "trade", n_lat, LATENCY_RATE, tmp)
                if got < n_lat:
                    print(f"warning: {impl} latency: {got} of {n_lat} arrived", file=sys.stderr)
                if impl not in lat or pct(ns, 99) < pct(lat[impl], 99):
                    lat[impl] = ns
            for kind, _ in kinds:
                for target, where in (("single", url), ("cluster", cluster_url)):
                    r = run_into(where, kind, args.messages, tmp)
                    into[target, kind] = max(into.get((target, kind), 0.0), r)
    print(
        f"ring -> publisher -> redis-server -> subscriber, all on this {os.cpu_count()}-core "
        f"machine (load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}); python "
        f"{sys.version.split()[0]}, redis-py {redis.__version__} + hiredis; best of {args.runs} runs"
    )
    print(f"{'measure':34} {'mdpipe':>10} {'naive loop':>11} {'ratio':>7}")
    for kind, label in kinds:
        ours, base = rate["mdpipe", kind], rate["naive", kind]
        print(f"{'sustained msgs/s, ' + label:34} {ours:10,.0f} {base:11,.0f} {ours / base:6.1f}x")
    for q in (50, 99):
        ours, base = pct(lat["mdpipe"], q), pct(lat["naive"], q)
        name = f"latency p{q} us at {LATENCY_RATE:,}/s"
        print(f"{name:34} {ours:10,.0f} {base:11,.0f} {base / ours:6.1f}x")
    print("(ratio: mdpipe over naive for rates, naive over mdpipe for latencies)")
    print(f"{'mdpipe publisher into Redis':34} {'single':>10} {'3-master':>11} {'ratio':>7}")
    for kind, label in kinds:
        one, many = into["single", kind], into["cluster", kind]
        name = "confirmed msgs/s, " + label
        print(f"{name:34} {one:10,.0f} {many:11,.0f} {many / one:6.1f}x")
    print(
        "(one publisher process; cluster: SPUBLISH to the master of each symbol's slot, "
        f"trades of {len(TRADE_SYMBOLS)} symbols, books of {len(BOOK_SYMBOLS)})"
    )
    slowest = min(rate["mdpipe", k] for k, _ in kinds)
    ratio = min(rate["mdpipe", k] / rate["naive", k] for k, _ in kinds)
    p99 = pct(lat["mdpipe"], 99)
    ok = slowest >= TARGET_RATE and ratio >= TARGET_RATIO and p99 <= TARGET_P99_US
    print(
        f"targets >= {TARGET_RATE:,} msgs/s and >= {TARGET_RATIO:.0f}x the naive loop (trades and "
        f"books), p99 <= {TARGET_P99_US / 1000:.0f} ms at {LATENCY_RATE:,}/s: "
        f"{'met' if ok else 'NOT met'} (slowest {slowest:,.0f} msgs/s, lowest ratio {ratio:.1f}x, "
        f"p99 {p99:,.0f} us)"
    )


if __name__ == "__main__":
    main()
