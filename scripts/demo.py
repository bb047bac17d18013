"""`make demo`: the whole pipeline against the built-in simulator, shown step by step.

Starts a private redis-server and `mdpipe start --config config/demo.toml` on free ports,
waits for /ready, shows the live book, a Redis subscriber, a strategy reading shared
memory, `mdpipe stats`, a few metrics and a dashboard frame, then stops and checks nothing
is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mdpipe.shm.segment import list_segments, process_start_ticks  # noqa: E402
from mdpipe.supervisor import lock_path, read_lock  # noqa: E402

PY = sys.executable
MDPIPE = [PY, "-m", "mdpipe.cli"]
SYMBOL = "BTCUSDT"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def show(cmd: list[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository, echo it and its output."""
    shown = " ".join("mdpipe" if a == "mdpipe.cli" else a for a in cmd[1:] if a != "-m")
    print(f"$ {shown}", flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    out = (res.stdout + res.stderr).rstrip()
    if out:
        print(out, flush=True)
    if res.returncode != 0:
        raise SystemExit(f"demo: `{shown}` failed with exit code {res.returncode}")
    return res


def dashboard_frame(base: str, symbol: str) -> dict:
    """The first frame of /dashboard/events for `symbol` whose book is live."""
    url = f"{base}/dashboard/events?symbol={symbol}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        for _ in range(100):
            line = resp.readline()
            if line.startswith(b"data: "):
                frame = json.loads(line[len(b"data: ") :])
                if frame["market"]["state"] == "live":
                    return frame
    raise SystemExit("demo: the dashboard showed no live book")


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("demo: redis-server is not installed (`make demo` installs it)")
    port = free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*args, "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("demo: redis-server did not start")


def main() -> int:
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mdpipe-demo-"))
    instance = "demo" if read_lock("demo") is None and not list_segments("demo") else "demo-2"
    redis_proc, redis_url = start_redis(tmp)
    http_port, sim_port = free_port(), free_port()
    log_path = tmp / "mdpipe.log"
    start = [*MDPIPE, "start", "--config", "config/demo.toml", "--instance", instance]
    start += ["--set", f"redis.url={redis_url}", "--set", f"sim.port={sim_port}"]
    start += ["--set", f"http.port={http_port}"]
    cores = sorted(os.sched_getaffinity(0))
    if 1 not in cores:  # demo.toml pins ingest to core 1; a one-core machine has only 0
        start += ["--set", f"feeds.0.cores={cores[0]}"]
    base = f"http://127.0.0.1:{http_port}"
    sup = None
    pids: dict[str, int] = {}
    try:
        step(f"private redis-server at {redis_url}; starting instance {instance!r}")
        print("$ mdpipe " + " ".join(start[3:]), flush=True)
        with open(log_path, "wb") as log:
            sup = subprocess.Popen(start, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 60
        while http_get(f"{base}/ready")[0] != 200:
            if sup.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text(), file=sys.stderr)
                raise SystemExit("demo: the instance did not become ready")
            time.sleep(0.1)
        print(f"ready after {time.monotonic() - t_start:.1f} s: GET {base}/ready -> 200")
        print("supervisor log so far:")
        for line in log_path.read_text().splitlines()[:14]:
            print("  | " + line)

        step(f"the live {SYMBOL} book from shared memory (mdpipe tail, three frames)")
        for i in range(3):
            if i:
                time.sleep(1.0)
            show(
                [*MDPIPE, "tail", SYMBOL, "--instance", instance, "--once", "--levels", "5"]
                + ["--trades", "5", "--no-color"]
            )

        step("the same market from Redis (readers/redis_subscriber.py on mdpipe.redis_consumer)")
        show(
            [PY, "readers/redis_subscriber.py", "--url", redis_url, SYMBOL, "ETHUSDT"]
            + ["--count", "8", "--timeout", "10", "--levels", "2"]
        )

        step("a strategy in another process reading the rings (readers/strategy_example.py)")
        show(
            [PY, "readers/strategy_example.py", "--instance", instance, "--symbol", SYMBOL]
            + ["--seconds", "3"]
        )

        step("mdpipe stats")
        show([*MDPIPE, "stats", "--instance", instance])
        snap = json.loads(
            subprocess.run(
                [*MDPIPE, "stats", "--json", "--instance", instance],
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=30,
            ).stdout
        )
        pids = {p["name"]: p["pid"] for p in snap["processes"] if p["pid"]}
        pids["supervisor"] = sup.pid

        step(f"a few of the Prometheus metrics at {base}/metrics")
        body = http_get(f"{base}/metrics")[1].decode()
        wanted = (
            "mdpipe_process_up",
            "mdpipe_ring_records_total",
            "mdpipe_ingest_books_synced",
            "mdpipe_publisher_lag_seconds",
        )
        lines = [ln for ln in body.splitlines() if ln.startswith(wanted)]
        print("\n".join(lines[:10]))
        print(f"({len(body.splitlines())} lines in all)")

        step(f"the live dashboard at {base}/dashboard: one frame of its event stream")
        frame = dashboard_frame(base, SYMBOL)
        book, inst = frame["market"], frame["instance"]
        print(
            f"{book['exchange']} {book['symbol']} ({book['ring']}) {book['state']}: "
            f"bid {book['bids'][0][0]} ask {book['asks'][0][0]}, update id {book['uid']}, "
            f"{len(book['trades'])} trades on the tape; "
            f"{inst['supervisor']['children_up']}/{inst['supervisor']['children']} processes up"
        )
        print("(open it in a browser while `mdpipe start --config config/demo.toml` runs)")

        step("mdpipe stop")
        show([*MDPIPE, "stop", "--instance", instance])
        sup.wait(30)
    finally:
        if sup is not None and sup.poll() is None:
            sup.kill()
            sup.wait()
        redis_proc.kill()
        redis_proc.wait()

    step("nothing left behind")
    left = [name for name, pid in pids.items() if process_start_ticks(pid) is not None]
    segments = list_segments(instance)
    print(f"processes still running: {', '.join(left) or 'none'}")
    print(f"segments in /dev/shm: {', '.join(r for _, r in segments) or 'none'}")
    print(
        f"lock file {lock_path(instance)}: {'present' if lock_path(instance).exists() else 'gone'}"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    ok = not left and not segments and sup.returncode == 0
    print(f"\ndemo {'finished' if ok else 'FAILED'} in {time.monotonic() - t_start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
