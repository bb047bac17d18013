"""The supervisor's CPU with dashboard pages open, at the demo's rate.

Starts a private redis-server and `mdpipe start --config config/demo.toml` (the simulator at
its demo rate) on free ports, then measures the supervisor process's CPU time (all its
threads: main loop, HTTP server, dashboard sampler and streams) over a window, in turn with:

- no page open (the baseline);
- 5 dashboard pages: 5 clients of /dashboard/events, each reading every frame;
- 5 pages polling /metrics 10 times a second, what a home-made live page on the
  Prometheus endpoint would cost for the same refresh rate.

The target: under 10% of one core with 5 dashboard pages open.

Run: .venv/bin/python bench/dashboard.py [--seconds S] [--pages N]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from mdpipe.config import load

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
TARGET_CORE_PCT = 10.0
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextlib.contextmanager
def instance(tmp: Path) -> Iterator[tuple[str, int, int]]:
    """(url, supervisor pid, sim rate) of a demo instance that runs until the block ends."""
    redis_port, http_port, sim_port = free_port(), free_port(), free_port()
    redis_proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(redis_port)]
        + ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    name = f"bench{uuid.uuid4().hex[:8]}"
    args = [PY, "-m", "mdpipe.cli", "start", "--config", "config/demo.toml", "--instance", name]
    args += ["--set", f"redis.url=redis://127.0.0.1:{redis_port}/0"]
    args += ["--set", f"http.port={http_port}", "--set", f"sim.port={sim_port}"]
    cores = sorted(os.sched_getaffinity(0))
    if 1 not in cores:
        args += ["--set", f"feeds.0.cores={cores[0]}"]
    log = open(tmp / "mdpipe.log", "wb")  # noqa: SIM115 - closed in the finally below
    sup = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url + "/ready", timeout=2) as resp,
            ):
                if resp.status == 200:
                    break
            if sup.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"mdpipe did not get ready:\n{(tmp / 'mdpipe.log').read_text()}")
            time.sleep(0.2)
        yield url, sup.pid, load(REPO / "config" / "demo.toml").sim.rate
    finally:
        subprocess.run(
            [PY, "-m", "mdpipe.cli", "stop", "--instance", name, "--timeout", "20"],
            cwd=REPO,
            capture_output=True,
        )
        sup.wait(30)
        log.close()
        redis_proc.kill()
        redis_proc.wait()


class Clients:
    """N client threads running `work(stop)` until stopped; each counts what it got."""

    def __init__(self, n: int, work: Callable[[threading.Event, list[int], int], None]) -> None:
        self.stop = threading.Event()
        self.counts = [0] * n
        self.threads = [
            threading.Thread(target=work, args=(self.stop, self.counts, i), daemon=True)
            for i in range(n)
        ]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def sse_page(url: str) -> Callable[[threading.Event, list[int], int], None]:
    host, port = url.removeprefix("http://").split(":")

    def work(stop: threading.Event, counts: list[int], i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/dashboard/events")
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        while not stop.is_set():
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"data: "):
                counts[i] += 1
        resp.close()
        conn.close()

    return work


def metrics_poller(url: str, hz: float) -> Callable[[threading.Event, list[int], int], None]:
    def work(stop: threading.Event, counts: list[int], i: int) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
                    resp.read()
                counts[i] += 1
            except urllib.error.HTTPError:
                pass  # refused (a server may serve one scrape at a time): not an update
            stop.wait(max(0.0, 1 / hz - (time.monotonic() - started)))

    return work


def measure(pid: int, seconds: float, clients: Clients | None) -> tuple[float, float]:
    """(CPU % of one core of pid, updates/s per client) over `seconds` after a warm-up."""
    time.sleep(2.0)
    counts0 = list(clients.counts) if clients else []
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    rate = 0.0
    if clients:
        got = [b - a for a, b in zip(counts0, clients.counts, strict=True)]
        rate = min(got) / (t1 - t0)
    return 100 * (cpu1 - cpu0) / (t1 - t0), rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring window per case")
    ap.add_argument("--pages", type=int, default=5)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, instance(Path(tmp)) as (url, pid, rate):
        print(f"supervisor pid {pid}, simulator at {rate} events/s, {opts.seconds:g} s per case")
        idle, _ = measure(pid, opts.seconds, None)
        pages = Clients(opts.pages, sse_page(url))
        try:
            dash, dash_rate = measure(pid, opts.seconds, pages)
        finally:
            pages.close()
        pollers = Clients(opts.pages, metrics_poller(url, 10.0))
        try:
            poll_cpu, poll_rate = measure(pid, opts.seconds, pollers)
        finally:
            pollers.close()
    rows = [
        ("no page open", idle, "-"),
        (f"{opts.pages} dashboard pages (SSE)", dash, f"{dash_rate:.1f}"),
        (f"{opts.pages} pages polling /metrics at 10 Hz", poll_cpu, f"{poll_rate:.1f}"),
    ]
    print(f"{'case':<40} {'supervisor CPU % of a core':>28} {'updates/s per page':>20}")
    for name, cpu, per_page in rows:
        print(f"{name:<40} {cpu:>28.1f} {per_page:>20}")
    print(
        f"dashboard pages cost {dash - idle:.1f} points over idle; polling /metrics for the "
        f"same refresh costs {poll_cpu / dash:.1f}x the dashboard's total"
    )
    ok = dash < TARGET_CORE_PCT and dash_rate >= 10 * 0.9
    print(
        f"target: < {TARGET_CORE_PCT:g}% of a core with {opts.pages} pages at >= 10 updates/s: "
        + ("met" if ok else "MISSED")
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
