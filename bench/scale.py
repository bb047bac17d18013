"""Scale: the whole USD-M market (1,000 symbols over 2 ingest processes) on the simulator.

Starts a private redis-server and `mdpipe start --config config/usdm-all.toml` (the
simulator's 1,000-symbol universe, which enforces the exchange's limits: 414, 1,024 streams
and 10 messages a second per connection, REST weight 2,400 a minute with 429 then 418).
Prints, and checks:

- every connection up, every book synced, and the time that took against the least the
  REST weight budget allows (N snapshots x weight, 2,400 a minute);
- no 414, no refused REST request (429/418), no closed connection at the simulator;
- every trade recorded: the trades rings are read from the start; per symbol the aggregate
  trade ids are consecutive (none missing) and every symbol traded; the simulator's count
  of trade messages sent is shown against the records;
- private memory of every process of the instance from /proc/<pid>/smaps_rollup: USS
  (private pages), PSS, and PSS without the rings' shared pages (Pss_Shmem); the total of
  the last must stay under 300 MB. RSS is shown for comparison only.

Exit code 0 when every check passes. The last line is the summary as JSON.

Run: .venv/bin/python bench/scale.py [--snapshot-limit 1000] [--rate 2000] [--trade-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from demo import free_port, http_get, start_redis  # noqa: E402

from mdpipe import config as C  # noqa: E402
from mdpipe.readers import attach  # noqa: E402
from mdpipe.shm.segment import list_segments, read_status, unlink_instance  # noqa: E402
from mdpipe.supervisor import read_lock  # noqa: E402
from mdpipe.venues.binance.limits import WEIGHT_LIMIT, depth_weight  # noqa: E402

PY = sys.executable
MB = 1_000_000
MEMORY_LIMIT_MB = 300
CONFIG = REPO / "config" / "usdm-all.toml"


def smaps(pid: int) -> dict[str, int]:
    """smaps_rollup of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def memory_rows(named: dict[str, int]) -> tuple[list[list[str]], float]:
    """A row per process (MB) and the total private memory without ring pages."""
    rows = [["process", "pid", "RSS", "USS", "PSS", "PSS w/o rings"]]
    total = 0.0
    for name, pid in sorted(named.items()):
        m = smaps(pid)
        uss = m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
        pss = m.get("Pss", 0)
        private = pss - m.get("Pss_Shmem", 0)
        total += private / MB
        rows.append(
            [name, str(pid)] + [f"{v / MB:.1f}" for v in (m.get("Rss", 0), uss, pss, private)]
        )
    rows.append(["total", "", "", "", "", f"{total:.1f}"])
    return rows, total


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class TradeCheck:
    """Reads every trade of the feed's trades rings and checks ids per symbol are consecutive."""

    def __init__(self, instance: str, shards: int) -> None:
        self.readers = [
            attach(instance, f"trades.usdm.{i}", kind="trade", wait=True, timeout=60)
            for i in range(shards)
        ]
        for r in self.readers:
            r.seek_oldest()
        self.last: dict[tuple[int, int], int] = {}  # (ring, symbol id) -> last trade id
        self.records = 0
        self.gaps = 0
        self.lost = 0

    def drain(self) -> None:
        for ring, r in enumerate(self.readers):
            while len(batch := r.read_batch(8192)):
                self.records += len(batch)
                sids, tids = batch["symbol_id"].tolist(), batch["trade_id"].tolist()
                for sid, tid in zip(sids, tids, strict=True):
                    key = (ring, sid)
                    prev = self.last.get(key)
                    if prev is not None and tid != prev + 1:
                        self.gaps += 1
                    self.last[key] = tid
            self.lost = sum(x.lost for x in self.readers)


def shard_counters(instance: str, shards: int) -> list[dict[str, int]]:
    out = []
    for i in range(shards):
        try:
            out.append(read_status(instance, f"books.usdm.{i}").counters)
        except Exception:  # noqa: BLE001 - not created yet
            out.append({})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snapshot-limit", type=int, default=1000)
    p.add_argument("--rate", type=int, default=2000, help="simulator messages/s")
    p.add_argument("--trade-seconds", type=float, default=30.0, help="run after all synced")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for sync")
    args = p.parse_args()

    cfg = C.load(CONFIG, env={})
    feed = cfg.feeds[0]
    n, shards = len(feed.symbols), len(feed.cores)
    instance = f"scale-{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="mdpipe-scale-"))
    redis_proc, redis_url = start_redis(tmp)
    sim_port = free_port()
    sets = {
        "redis.url": redis_url,
        "sim.port": sim_port,
        "http.port": free_port(),
        "sim.rate": args.rate,
        "feeds.0.snapshot_limit": args.snapshot_limit,
        "shm.trade_capacity": 1 << 20,  # the bench reads every trade from the start
    }
    cmd = [PY, "-m", "mdpipe.cli", "start", "--config", str(CONFIG), "--instance", instance]
    cmd += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    log = tmp / "mdpipe.log"
    os.environ["MDPIPE_RUNTIME_DIR"] = str(tmp / "rt")  # lock and control files: ours alone
    env = dict(os.environ)
    print(
        f"{n} symbols over {shards} ingest processes, snapshot limit {args.snapshot_limit}; log {log}",
        flush=True,
    )
    t0 = time.monotonic()
    with open(log, "wb") as out:
        sup = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    ok = False
    summary: dict = {"symbols": n, "shards": shards, "snapshot_limit": args.snapshot_limit}
    try:
        checker = None
        synced_at = None
        while time.monotonic() - t0 < args.timeout:
            if sup.poll() is not None:
                raise SystemExit(f"scale: mdpipe start exited:\n{log.read_text()[-4000:]}")
            cs = shard_counters(instance, shards)
            if checker is None and len(list_segments(instance)) >= 2 * shards:
                checker = TradeCheck(instance, shards)
            if checker is not None:
                checker.drain()
            if all(c and c["g_books_synced"] == c["g_books_total"] and c["g_connections"] == c["g_connections_expected"] for c in cs) \
                    and sum(c["g_books_synced"] for c in cs) == n:  # fmt: skip
                synced_at = time.monotonic() - t0
                break
            time.sleep(0.2)
        if synced_at is None:
            print(
                f"FAIL: not all synced in {args.timeout:.0f} s: {shard_counters(instance, shards)}"
            )
            return 1
        cost = depth_weight("futures", args.snapshot_limit)
        limit = WEIGHT_LIMIT["futures"]
        minimum = (math.ceil(n * cost / limit) - 1) * 60.0
        per_minute = int(limit * 0.9) // cost  # what the budget lets out: 90% of the minute
        at_share = (math.ceil(n / per_minute) - 1) * 60.0
        print(f"all {n} books synced, every connection up: {synced_at:.1f} s after start")
        for line in log.read_text().splitlines():
            if ": connected to " in line or "shard usdm/" in line or "starting:" in line:
                print("  " + line)
        print(
            f"weight budget minimum: {minimum:.0f} s ({n} snapshots x weight {cost} = {n * cost:,} "
            f"at {limit:,} a minute, from a minute's start); ratio {synced_at / max(minimum, 1):.2f}"
        )
        print(f"  at the budget's 90% share ({per_minute} snapshots a minute): {at_share:.0f} s")
        end = time.monotonic() + args.trade_seconds
        while time.monotonic() < end:
            checker.drain()
            time.sleep(0.2)
        status, body = http_get(f"http://127.0.0.1:{sim_port}/_sim/stats")
        sim = json.loads(body) if status == 200 else {}
        by_stream = sim.get("messages", {}).get("by_stream", {})
        sent = sum(v for k, v in by_stream.items() if k.endswith("@aggTrade"))
        # What the simulator had sent by then reaches the rings (a loaded machine lags).
        deadline = time.monotonic() + 30
        while checker.records < sent and time.monotonic() < deadline:
            time.sleep(0.2)
            checker.drain()
        cs = shard_counters(instance, shards)
        lock = read_lock(instance) or {}
        children = lock.get("children", {})
        named = {"supervisor": sup.pid} | {k: pid for k, (pid, _t) in children.items()}
        sim_pid = named.pop("sim", None)
        rows, total = memory_rows(named)
        print(table(rows))
        if sim_pid is not None:  # the exchange's stand-in: shown, not part of the pipeline
            m = smaps(sim_pid)
            sim_uss = (m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)) / MB
            print(
                f"simulator (not counted): USS {sim_uss:.1f} MB, PSS {m.get('Pss', 0) / MB:.1f} MB"
            )
        untraded = n - len(checker.last)
        weight = sim.get("rest_weight", {})
        conns = sim.get("connections", {})
        print(
            f"connections: opened {conns.get('opened')}, closed {conns.get('closed')}; rest {sim.get('rest', {}).get('by_status')}; weight {weight}"
        )
        print(
            f"trades: {checker.records:,} recorded, simulator sent {sent:,} aggTrade messages; id gaps {checker.gaps}, lost {checker.lost}, symbols without a trade {untraded}"
        )
        checks = {
            "all synced": all(c["g_books_synced"] == c["g_books_total"] for c in cs),
            "connections up": all(c["g_connections"] == c["g_connections_expected"] for c in cs),
            "no 414 / closed connection": conns.get("closed", {}) == {},
            "no 429 / 418": not weight.get("refused_429") and not weight.get("refused_418"),
            "no resync": sum(c["resyncs"] for c in cs) == 0,
            "every trade recorded": checker.gaps == 0
            and checker.lost == 0
            and checker.records >= sent,
            "every process measured": len(named) == 2 + shards,  # + supervisor, publisher
            f"private memory < {MEMORY_LIMIT_MB} MB": total < MEMORY_LIMIT_MB,
        }
        for name, passed in checks.items():
            print(f"{'ok  ' if passed else 'FAIL'} {name}")
        ok = all(checks.values())
        summary |= {
            "synced_s": round(synced_at, 1),
            "budget_minimum_s": minimum,
            "budget_share_minimum_s": at_share,
            "trades": checker.records,
            "sim_trades_sent": sent,
            "private_mb": round(total, 1),
            "ok": ok,
        }
    finally:
        if sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(30)
            except subprocess.TimeoutExpired:
                sup.kill()
        redis_proc.terminate()
        redis_proc.wait()
        unlink_instance(instance)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp} (the instance's log)")
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
