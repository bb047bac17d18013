"""Soak: an instance at 20,000 messages/s for minutes, watching every process's memory and fds.

Starts a private redis-server and `mdpipe start --config config/demo.toml` with the simulator
at --rate messages/s on every diff (depth@0ms) and trade, plus a reader process that takes
every book and trade from the rings. Every --every seconds it samples each process's RSS,
open file descriptors and CPU from /proc. At the end it stops the instance and prints a
table (start/end/max RSS and fds per process, CPU), the messages and the loss, and checks:

- RSS steady: after the warm-up, the fitted growth of each mdpipe process's private memory
  (RssAnon; the rings' shared pages, RssShmem, fill once and are shown apart) stays under a
  small bound (the simulator and redis-server are shown, not checked);
- no fd leak: no process ends with more descriptors than after the warm-up (+2);
- no segment leak: the same segments all along; none (and no lock file) after the stop;
- no restarts: every process kept its pid.

Exit code 0 when every check passes. The last line is the summary as JSON.

Run: .venv/bin/python bench/soak.py [--minutes 10] [--rate 20000] [--every 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from demo import free_port, http_get, start_redis  # noqa: E402

from mdpipe.shm.segment import (  # noqa: E402
    list_segments,
    read_status,
    unlink_instance,  # noqa: E402
)
from mdpipe.supervisor import lock_path, read_lock  # noqa: E402

PY = sys.executable
MIB = 1 << 20
RSS_BOUND_MIB = 4.0  # growth allowed over the run after the warm-up (fitted trend)
RSS_BOUND_FRACTION = 0.03  # ... or this fraction of the process's RSS, if larger
FD_SLACK = 2

READER = r"""
import json, signal, sys, time
from mdpipe.readers import attach
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
books = attach(sys.argv[1], "books", kind="book", wait=True, timeout=30)
trades = attach(sys.argv[1], "trades", kind="trade", wait=True, timeout=30)
n = 0
while not stop:
    got = len(books.read_batch(4096)) + len(trades.read_batch(4096))
    n += got
    if not got:
        time.sleep(0.001)
print(json.dumps({"records": n, "lost": books.lost + trades.lost}), flush=True)
"""


@dataclass
class Track:
    """One process's samples: (seconds, private RSS bytes, open fds, CPU seconds, shm bytes)."""

    name: str
    pid: int
    samples: list[tuple[float, int, int, float, int]] = field(default_factory=list)

    def sample(self, t: float) -> bool:
        """Take one sample from /proc; False once the process is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            stat = Path(f"/proc/{self.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return False
        kib = {k: int(v.split()[0]) for k, _, v in (ln.partition(":") for ln in status.splitlines())
               if k in ("RssAnon", "RssShmem")}  # fmt: skip
        if len(kib) < 2:
            return False  # exited, not yet reaped
        cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        self.samples.append((t, kib["RssAnon"] << 10, fds, cpu, kib["RssShmem"] << 10))
        return True

    def summary(self, warm: float) -> dict:
        """Start/end/max private RSS and fds, its fitted growth after `warm` s, shm, CPU %."""
        a = np.array(self.samples, dtype=float)
        steady = a[a[:, 0] >= warm] if (a[:, 0] >= warm).sum() >= 2 else a[-2:]
        span = steady[-1, 0] - steady[0, 0]
        slope = np.polyfit(steady[:, 0], steady[:, 1], 1)[0] if span > 0 else 0.0
        return {
            "name": self.name,
            "pid": self.pid,
            "rss_mib": [a[0, 1] / MIB, a[-1, 1] / MIB, a[:, 1].max() / MIB],
            "rss_warm_mib": steady[0, 1] / MIB,
            "rss_growth_mib": slope * span / MIB,
            "fds": [int(a[0, 2]), int(a[-1, 2]), int(a[:, 2].max())],
            "fds_warm": int(steady[0, 2]),
            "shm_mib": a[-1, 4] / MIB,
            "cpu_pct": 100 * (a[-1, 3] - a[0, 3]) / max(a[-1, 0] - a[0, 0], 1e-9),
        }


def start_instance(
    instance: str, redis_url: str, rate: int, log: Path
) -> tuple[subprocess.Popen, int]:
    """`mdpipe start` on free ports, the simulator at `rate` messages/s; (process, sim port)."""
    sets = {
        "redis.url": redis_url,
        "sim.port": free_port(),
        "http.port": free_port(),
        "sim.rate": rate,
        "feeds.0.depth_stream": "depth@0ms",
        "feeds.0.trade_stream": "trade",
        "shm.book_capacity": 1 << 17,
        "shm.trade_capacity": 1 << 17,
    }
    cores = sorted(os.sched_getaffinity(0))
    if 1 not in cores:  # demo.toml pins ingest to core 1
        sets["feeds.0.cores"] = cores[0]
    args = [PY, "-m", "mdpipe.cli", "start", "--config", "config/demo.toml"]
    args += ["--instance", instance]
    args += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{sets['http.port']}/ready"
    deadline = time.monotonic() + 60
    while http_get(url)[0] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"soak: the instance did not become ready:\n{log.read_text()}")
        time.sleep(0.2)
    return proc, sets["sim.port"]


def processes(instance: str, sup: subprocess.Popen, reader: subprocess.Popen, redis_pid: int):
    """Every process to watch, by name."""
    lock = read_lock(instance) or {}
    named = {"supervisor": sup.pid}
    named |= {name: pid for name, (pid, _ticks) in lock.get("children", {}).items()}
    named |= {"reader": reader.pid, "redis-server": redis_pid}
    return [Track(name, pid) for name, pid in named.items()]


def counters(instance: str) -> dict[str, dict[str, int]]:
    """Every segment's counters, and each ring's cursor as `messages`."""
    out = {}
    for _, ring in list_segments(instance):
        st = read_status(instance, ring)
        out[ring] = {**st.counters, "messages": st.write_cursor}
    return out


def sim_stats(port: int) -> dict:
    """The simulator's own counters (GET /_sim/stats)."""
    status, body = http_get(f"http://127.0.0.1:{port}/_sim/stats")
    return json.loads(body) if status == 200 else {}


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(summaries: list[dict], final: dict, reader: dict, sim: dict, seconds: float) -> dict:
    """Print the tables; return messages and loss."""
    rows = [["process", "pid", "RSS MiB start", "end", "max", "growth", "+ring pages",
             "fds start", "end", "max", "CPU %"]]  # fmt: skip
    for s in summaries:
        r0, r1, rmax = s["rss_mib"]
        f0, f1, fmax = s["fds"]
        rows.append([s["name"], str(s["pid"]), f"{r0:.1f}", f"{r1:.1f}", f"{rmax:.1f}",
                     f"{s['rss_growth_mib']:+.2f}", f"{s['shm_mib']:.0f}", str(f0), str(f1), str(fmax),
                     f"{s['cpu_pct']:.0f}"])  # fmt: skip
    print(table(rows))
    books = final.get("books.sim.0", {})
    trades = final.get("trades.sim.0", {})
    pub = final.get("publisher", {})
    sent = sim.get("messages", {})
    messages = {
        "sim_sent": sent.get("total", 0),
        "ingest_frames": books.get("frames", 0),
        "book_records": books.get("messages", 0),
        "trade_records": trades.get("messages", 0),
        "books_published": pub.get("books_published", 0),
        "trades_published": pub.get("trades_published", 0),
        "reader_records": reader.get("records", 0),
    }
    loss = {
        "sim_slow_client_drops": sent.get("slow_clients_dropped", 0),
        "books_conflated": pub.get("books_conflated", 0),
        "books_lost": pub.get("books_lost", 0),
        "trades_lost": pub.get("trades_lost", 0),
        "dropped_books": pub.get("dropped_books", 0),
        "dropped_trades": pub.get("dropped_trades", 0),
        "reader_lost": reader.get("lost", 0),
        "in_flight_to_redis": pub.get("g_lag_records", 0),
        "gaps": books.get("gaps", 0),
        "resyncs": books.get("resyncs", 0),
        "reconnects": books.get("reconnects", 0),
        "parse_errors": books.get("parse_errors", 0),
    }
    rate = messages["ingest_frames"] / seconds
    print(f"\nmessages in {seconds:.0f} s: " + ", ".join(f"{k} {v:,}" for k, v in messages.items())
          + f" ({rate:,.0f} frames/s into ingest)")  # fmt: skip
    print("loss: " + ", ".join(f"{k} {v:,}" for k, v in loss.items()))
    return {"messages": messages, "loss": loss, "frames_per_s": rate}


def checks(summaries: list[dict], segs: list[set], after: dict) -> dict[str, bool]:
    """The resource checks (each True when it passes)."""
    # The simulator stands in for the exchange: its send buffer to a consumer that falls
    # behind for a moment holds the backlog (up to --max-send-buffer) and the allocator keeps
    # that high-water mark. It is shown, like redis-server, but not part of a deployment.
    watched = [s for s in summaries if s["name"] not in ("redis-server", "sim")]
    rss = all(
        s["rss_growth_mib"] <= max(RSS_BOUND_MIB, RSS_BOUND_FRACTION * s["rss_warm_mib"])
        for s in watched
    )
    fds = all(s["fds"][1] <= s["fds_warm"] + FD_SLACK for s in watched)
    return {
        "rss_steady": rss,
        "fds_steady": fds,
        "segments_constant": all(s == segs[0] for s in segs),
        "shm_clean_after_stop": after["segments"] == [] and not after["lock"],
        "processes_gone_after_stop": not after["alive"],
        "no_restarts": after["restarts"] == 0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to run")
    ap.add_argument("--rate", type=int, default=20_000, help="simulator messages/s")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    args = ap.parse_args()
    seconds = args.minutes * 60
    warm = min(60.0, max(2 * args.every, 0.2 * seconds))
    tmp = Path(tempfile.mkdtemp(prefix="mdpipe-soak-"))
    instance = f"soak-{uuid.uuid4().hex[:8]}"
    redis_proc, redis_url = start_redis(tmp)
    sup = reader = None
    try:
        print(f"soak: instance {instance}, {args.rate:,} messages/s for {seconds:.0f} s, "
              f"sampling every {args.every:g} s (warm-up {warm:.0f} s)", flush=True)  # fmt: skip
        sup, sim_port = start_instance(instance, redis_url, args.rate, tmp / "mdpipe.log")
        reader = subprocess.Popen([PY, "-c", READER, instance], stdout=subprocess.PIPE, cwd=REPO)
        tracks = processes(instance, sup, reader, redis_proc.pid)
        segs: list[set] = []
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < seconds:
            for track in tracks:
                if not track.sample(t):
                    raise SystemExit(f"soak: {track.name} (pid {track.pid}) exited:\n"
                                     f"{(tmp / 'mdpipe.log').read_text()[-3000:]}")  # fmt: skip
            segs.append(set(list_segments(instance)))
            time.sleep(max(0.0, args.every - (time.monotonic() - t0 - t)))
        for track in tracks:
            track.sample(time.monotonic() - t0)
        final = counters(instance)
        sim = sim_stats(sim_port)
        restarts = final.get("supervisor", {}).get("restarts", -1)
        reader.send_signal(signal.SIGTERM)
        reader_out = json.loads(reader.communicate(timeout=60)[0].splitlines()[-1])
        sup.send_signal(signal.SIGTERM)
        sup.wait(30)
        time.sleep(0.5)
        alive = [t.name for t in tracks if t.name not in ("redis-server", "reader")
                 and Path(f"/proc/{t.pid}").exists()]  # fmt: skip
        after = {"segments": list_segments(instance), "lock": lock_path(instance).exists(),
                 "alive": alive, "restarts": restarts}  # fmt: skip
        summaries = [t.summary(warm) for t in tracks]
        print()
        figures = report(summaries, final, reader_out, sim, seconds)
        result = checks(summaries, segs, after)
        print("checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result.items()))
        print(json.dumps({"instance": instance, "seconds": seconds, "rate": args.rate,
                          "processes": summaries, **figures, "checks": result}))  # fmt: skip
        return 0 if all(result.values()) else 1
    finally:
        for proc in (reader, sup):
            if proc is not None and proc.poll() is None:
                proc.kill()  # the supervisor's children die with it
                proc.wait()
        if sup is not None and sup.returncode != 0:
            time.sleep(1.0)
            unlink_instance(instance)  # a failed run leaves nothing behind either
            lock_path(instance).unlink(missing_ok=True)
        redis_proc.kill()
        redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
