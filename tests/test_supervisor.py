"""The supervisor with real processes: restarts, exclusivity, kill -9, backoff, clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import free_port

from mdpipe.shm.segment import list_segments, process_start_ticks, read_status
from mdpipe.supervisor import lock_path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def gone(pid: int) -> bool:
    """True when pid has exited (a zombie counts: only its reaping is pending)."""
    return process_start_ticks(pid) is None


def poll(cond, timeout: float, what: str, step: float = 0.05):
    """Wait for cond() to return something true; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(step)


def mdpipe(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "mdpipe.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


class Running:
    """`mdpipe start --config config/demo.toml` on free ports, as a child of the test."""

    def __init__(
        self,
        instance: str,
        redis_url: str,
        tmp: Path,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.instance = instance
        self.http_port = free_port()
        self.sim_port = free_port()
        self.args = [PY, "-m", "mdpipe.cli", "start", "--config", "config/demo.toml"]
        self.args += ["--instance", instance, "--set", f"redis.url={redis_url}"]
        self.args += ["--set", f"sim.port={self.sim_port}", "--set", f"http.port={self.http_port}"]
        cores = sorted(os.sched_getaffinity(0))
        if 1 not in cores:  # demo.toml pins ingest to core 1
            self.args += ["--set", f"feeds.0.cores={cores[0]}"]
        self.args += extra or []
        self.env = {**os.environ, **(env or {})}
        self.log_path = tmp / f"{instance}.{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Running:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=self.env
            )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def wait_ready(self, timeout: float = 40) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"mdpipe start exited:\n{self.log()}"
            return self.get("/ready")[0] == 200

        poll(ready, timeout, f"/ready of {self.instance}; log:\n{self.log()}")

    def stats(self) -> dict:
        res = mdpipe("stats", "--json", "--instance", self.instance)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def pids(self) -> dict[str, int]:
        """Every process of the instance: the supervisor and its children."""
        snap = self.stats()
        out = {p["name"]: p["pid"] for p in snap["processes"] if p["pid"]}
        out["supervisor"] = snap["supervisor"]["pid"]
        return out

    def stop(self) -> subprocess.CompletedProcess[str]:
        res = mdpipe("stop", "--instance", self.instance, "--timeout", "20")
        if self.proc is not None:
            self.proc.wait(30)
        return res

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


READER = r"""
import json, sys, time
from mdpipe.readers import attach
r = attach(sys.argv[1], "books", wait=True, timeout=30)
n, last, end = 0, 0.0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    rec = r.poll()
    if rec is None:
        time.sleep(0.002)
        continue
    n += 1
    if time.monotonic() - last > 0.1:
        last = time.monotonic()
        print(json.dumps({"n": n, "generation": r.generation, "lost": r.lost}), flush=True)
"""


class ReaderProcess:
    """A reader of the books rings in its own process, reporting what it has read."""

    def __init__(self, instance: str, seconds: float) -> None:
        self.proc = subprocess.Popen(
            [PY, "-c", READER, instance, str(seconds)], stdout=subprocess.PIPE, cwd=REPO
        )
        self.reports: list[dict] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.reports.append(json.loads(line))

    def latest(self) -> dict | None:
        return self.reports[-1] if self.reports else None

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_kill9_restart_exclusivity_and_supervisor_kill(instance, redis_server, tmp_path) -> None:
    run = Running(instance, redis_server.url, tmp_path).start()
    reader = None
    try:
        run.wait_ready()
        reader = ReaderProcess(instance, 600)  # outlives the test; killed at its end
        poll(reader.latest, 20, "the reader's first records")

        # A second start of the same instance is refused, and leaves the first alone.
        second = Running(instance, redis_server.url, tmp_path).start()
        assert second.proc.wait(30) == 1
        assert "already running" in second.log()
        assert run.get("/health")[0] == 200

        # kill -9 of the ingest process: restarted after supervisor.restart_initial,
        # and the reader follows it.
        ring = "books.sim.0"
        old = read_status(instance, ring)
        assert old.writer_alive
        os.kill(old.writer_pid, signal.SIGKILL)

        def restarted() -> bool:
            st = read_status(instance, ring)
            return st.writer_alive and st.writer_pid != old.writer_pid

        poll(restarted, 10, "the ingest process to come back", step=0.01)
        new_gen = old.generation + 1
        assert read_status(instance, ring).generation == new_gen
        n_at_restart = reader.latest()["n"]

        def followed() -> bool:
            r = reader.latest()
            return r["generation"] == new_gen and r["n"] > n_at_restart + 10

        poll(followed, 20, "records from the restarted writer in the same reader")
        assert reader.proc.poll() is None  # it never had to re-attach
        snap = run.stats()
        ingest = next(p for p in snap["processes"] if p["name"] == "ingest.sim.0")
        assert ingest["restarts"] == 1 and ingest["alive"]
        assert snap["supervisor"]["restarts"] == 1
        assert "ingest.sim.0 was killed by SIGKILL" in run.log()
        run.wait_ready()

        # kill -9 of the supervisor: its children die with it.
        pids = run.pids()
        os.kill(pids["supervisor"], signal.SIGKILL)
        run.proc.wait()
        for name, pid in pids.items():
            poll(lambda pid=pid: gone(pid), 15, f"{name} (pid {pid}) to exit")
        assert list_segments(instance)  # left behind by the killed run

        # A new start reclaims everything and runs; Ctrl-C (SIGINT) stops it cleanly.
        again = Running(instance, redis_server.url, tmp_path).start()
        try:
            again.wait_ready()
            assert "reclaimed" in again.log()
            pids = again.pids()
            again.proc.send_signal(signal.SIGINT)
            assert again.proc.wait(30) == 0, again.log()
            assert "SIGINT received" in again.log()
            for name, pid in pids.items():
                assert gone(pid), name
        finally:
            again.kill()
        assert list_segments(instance) == []
        assert not lock_path(instance).exists()
    finally:
        if reader is not None:
            reader.close()
        run.kill()


def test_stop_when_not_running(instance) -> None:
    res = mdpipe("stop", "--instance", instance)
    assert res.returncode == 1
    assert f"instance {instance!r} is not running" in res.stderr


# The crasher is a shell, not Python: a child that takes longer than restart_max to start
# and crash counts as stable, and a loaded machine can take that long to start Python. The
# supervisor is stopped after six restarts, however long they took.
CRASHER = r"""
import os, signal, sys, threading, time
from mdpipe import config
from mdpipe.logs import setup
from mdpipe.supervisor import Child, ChildSpec, Supervisor
setup("text", "info")
cfg = config.load(None, overrides=[
    f"instance={sys.argv[1]}", "http.enabled=false", "publisher.enabled=false",
    "supervisor.restart_initial=0.1", "supervisor.restart_max=0.8",
], env={})
sup = Supervisor(cfg, None, [])
sup.children = [Child(ChildSpec("crasher", ["/bin/sh", "-c", "exit 3"]))]

def stop_after_six_restarts():
    deadline = time.monotonic() + 40
    while sup.children[0].restarts < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=stop_after_six_restarts, daemon=True).start()
sys.exit(sup.run())
"""


def test_crashing_child_backs_off_to_restart_max(instance) -> None:
    res = subprocess.run(
        [PY, "-c", CRASHER, instance], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert res.returncode == 0, res.stderr
    delays = [
        float(d) for d in re.findall(r"crasher exited with code 3 .* in ([0-9.]+) s", res.stderr)
    ]
    assert len(delays) >= 6, res.stderr
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert all(d == 0.8 for d in delays[3:])
    assert list_segments(instance) == []
