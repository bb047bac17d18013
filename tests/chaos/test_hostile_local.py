"""A second, unprivileged local user attacks a running instance, as on a shared trading host.

The instance runs as us; the attacker is uid 65534 (setpriv), with the rights any local user
has: write /tmp and /dev/shm (both sticky and world-writable), connect to loopback ports,
start processes of its own. It repeats every attack of the hostile-local review:
- pre-creates the old lock path in /tmp (0666) naming its own processes, and symlinks
  pid/lock paths at a file of ours; points a runtime directory of its own at us;
- plants segments under the instance's name: a working mdpipe ring with fake prices, a
  FIFO, symlinks (to a file and to our real ring), a bad dtype description, 2^32-1 symbols,
  and 0666 files re-planted under our ring names while the instance starts;
- floods the HTTP port with idle connections while the instance runs with few descriptors,
  and we kill an ingest process meanwhile;
- hands `mdpipe start` hostile configs (/dev/zero, a FIFO, deep nesting, 2^40 records,
  1,700 symbols).
Throughout, /health and /ready answer 200 within 5 s; nothing of the attacker's is killed,
published to Redis, shown by stats, attach or /metrics, or followed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import RedisServer, remove_segments, unique_instance
from test_supervisor import PY, REPO, mdpipe

from mdpipe.readers import attach
from mdpipe.shm.reader import NoSuchRingError
from mdpipe.shm.segment import LayoutError, list_segments, process_start_ticks, read_status
from mdpipe.supervisor import lock_path, read_lock

from .conftest import Report
from .live import BOOKS, Live, RedisTap, wait

ATTACKER = 65534
FAKE_PRICE = 104.0
OUR_RINGS = (BOOKS, "trades.sim.0", "publisher", "supervisor")
FD_LIMIT = 256  # the instance runs with few descriptors: an fd flood must not matter
FLOOD = 600  # idle connections, more than FD_LIMIT
SETPRIV = ["setpriv", f"--reuid={ATTACKER}", f"--regid={ATTACKER}", "--clear-groups"]


def as_attacker(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command as the attacker and wait for it."""
    return subprocess.run(
        [*SETPRIV, *argv], capture_output=True, text=True, timeout=60, cwd="/", **kwargs
    )


def attacker_process(argv: list[str]) -> subprocess.Popen[str]:
    """Start a long-running process as the attacker (it prints one line when set up)."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": "/"}
    return subprocess.Popen(
        [*SETPRIV, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


# The attacker's own mdpipe rings under our instance's name: a live writer publishing a
# synced BTCUSDT book at FAKE_PRICE, and copies whose header it then corrupts.
PLANT_RINGS = r"""
import sys, time
import numpy as np
from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter

instance, price, tag = sys.argv[1], float(sys.argv[2]), sys.argv[3]
fake, descr, huge = f"books.{tag}.0", f"books.{tag}-descr.0", f"books.{tag}-huge.0"
rings = {}
for name in (fake, descr, huge):
    w = RingWriter.create(instance, name, "book", symbols=["BTCUSDT", "ETHUSDT"], capacity=64,
                          depth=20, mode=0o644)
    for k in range(20):
        w.bids[k] = (price - k, 1.0)
        w.asks[k] = (price + 1 + k, 1.0)
    now = time.time_ns()
    w.commit_book(0, L.FLAG_SYNCED, now, now, 10**12, 10**12 + 1, 10**12 - 1, 20, 20)
    rings[name] = w
mm = rings[descr]._mm
mm[L.H_DTYPE_DESCR : L.H_DTYPE_DESCR + 40] = b'{"itemsize": -7, "fields": [[[[[[[[[[[[['
rings[huge]._mm[L.H_N_SYMBOLS : L.H_N_SYMBOLS + 4] = (2**32 - 1).to_bytes(4, "little")
print("planted", flush=True)
while True:
    time.sleep(0.05)
    now = time.time_ns()
    w = rings[fake]
    w.commit_book(0, L.FLAG_SYNCED, now, now, 10**12, 10**12 + 1, 10**12 - 1, 20, 20)
"""

# 0666 files under our own ring names, re-created as fast as they disappear while we start.
REPLANT = r"""
import os, signal, sys, time
names = sys.argv[2:]
deadline = time.monotonic() + float(sys.argv[1])
print("replanting", flush=True)
planted = 0
signal.signal(signal.SIGTERM, lambda *_: (print("planted", planted, flush=True), sys.exit(0)))
while time.monotonic() < deadline:
    for name in names:
        path = "/dev/shm/" + name
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
        except OSError:
            continue
        os.fchmod(fd, 0o666)
        os.ftruncate(fd, 1 << 20)
        os.close(fd)
        planted += 1
    time.sleep(0.002)
print("planted", planted, flush=True)
"""

# Idle connections to the HTTP port, held open until stdin closes.
FLOOD_HTTP = r"""
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks, refused = [], 0
for _ in range(n):
    try:
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    except OSError:
        refused += 1
print("open", len(socks), "refused", refused, flush=True)
sys.stdin.read()
"""


class Prober:
    """GETs /health and /ready every 0.25 s (5 s timeout each); remembers every failure."""

    def __init__(self, base: str) -> None:
        self.base = base
        # (monotonic time sent, time answered, path, why): the server judged somewhere between
        self.failures: list[tuple[float, float, str, str]] = []
        self.probes = 0
        self.not_ready_windows: list[tuple[float, float]] = []
        self.paths = ["/health", "/ready"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Prober:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for path in list(self.paths):
                sent = time.monotonic()
                try:
                    with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                        ok = resp.status == 200
                        why = str(resp.status)
                except urllib.error.HTTPError as exc:
                    ok, why = False, f"{exc.code} {exc.read()[:300]!r}"
                except OSError as exc:
                    ok, why = False, repr(exc)
                self.probes += 1
                if not ok:
                    self.failures.append((sent, time.monotonic(), path, why))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="module")
def attacker_ok() -> None:
    res = as_attacker([PY, "-c", "import mdpipe, os; print(os.geteuid())"], env=_attacker_env())
    assert res.returncode == 0 and res.stdout.strip() == str(ATTACKER), (
        f"the attacker (uid {ATTACKER}) must be able to run {PY}: {res.stderr}"
    )


def _attacker_env() -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": "/"}


class Scene:
    """The running instance, the attacker's leftovers before it started, and the probes."""

    def __init__(self, live: Live, tap: RedisTap, prober: Prober, **planted: object) -> None:
        self.live, self.tap, self.prober = live, tap, prober
        self.__dict__.update(planted)


@pytest.fixture(scope="module")
def scene(attacker_ok: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("hostile")
    tmp.chmod(0o755)
    instance = unique_instance()
    server = RedisServer(tmp)
    server.start()
    # A file of ours that planted symlinks point at, and a process of the attacker's.
    victim = tmp / "victim.txt"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    sleeper = attacker_process(["sleep", "600"])
    wait(lambda: process_start_ticks(sleeper.pid) is not None, 10, "the attacker's sleep")
    # Lock and pid paths where older versions looked, pre-created by the attacker.
    old_lock = Path(f"/tmp/mdpipe.{instance}.lock")
    forged = {
        "instance": instance,
        "pid": sleeper.pid,
        "start_ticks": process_start_ticks(sleeper.pid),
        "children": {"sim": [sleeper.pid, process_start_ticks(sleeper.pid)]},
    }
    res = as_attacker(
        ["sh", "-c", f"umask 0; printf '%s' '{json.dumps(forged)}' > {old_lock}; "
         f"ln -s {victim} /tmp/mdpipe.{instance}.pid"]
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    # Segments under our names before we start: a FIFO, links, and 0666 re-plants.
    shm = Path("/dev/shm")
    fifo = shm / f"mdpipe.{instance}.books.fifo.0"
    links = {
        shm / f"mdpipe.{instance}.books.link.0": victim,
        shm / f"mdpipe.{instance}.books.alias.0": shm / f"mdpipe.{instance}.{BOOKS}",
    }
    planted = Scene(None, None, None, fifo=fifo, links=links)
    _plant_links_and_fifo(planted)
    # A live mdpipe ring of the attacker's under our instance's name, before we start.
    early = attacker_process([PY, "-c", PLANT_RINGS, instance, str(FAKE_PRICE), "early"])
    assert early.stdout.readline().strip() == "planted", early.stderr.read()
    live = Live(instance, server.url, tmp)
    live.run.args = ["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--", *live.run.args]
    # Squatting: 0666 files under our ring names before we start. Refused, naming the owner.
    squat = [f"/dev/shm/mdpipe.{instance}.{r}" for r in OUR_RINGS]
    res = as_attacker(["sh", "-c", "umask 0; " + " && ".join(f"echo squat > {p}" for p in squat)])
    assert res.returncode == 0, res.stderr
    squatted = subprocess.run(
        live.run.args, capture_output=True, text=True, timeout=120, cwd=REPO, env=live.run.env
    )
    squat_left = {p: Path(p).read_text() for p in squat}
    assert as_attacker(["rm", "-f", *squat]).returncode == 0
    tap = RedisTap(server.url).start()
    prober = None
    try:
        live.start()
        prober = Prober(live.run.url).start()
        yield Scene(
            live,
            tap,
            prober,
            instance=instance,
            victim=victim,
            sleeper=sleeper,
            early=early,
            old_lock=old_lock,
            forged=forged,
            fifo=fifo,
            links=links,
            squatted=squatted,
            squat_left=squat_left,
            redis=server,
            tmp=tmp,
        )
    finally:
        if prober is not None:
            prober.stop()
        tap.stop()
        live.close()
        for proc in (sleeper, early):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        for path in (old_lock, Path(f"/tmp/mdpipe.{instance}.pid"), fifo, *links):
            path.unlink(missing_ok=True)
        remove_segments(instance)
        server.stop()


def _plant_links_and_fifo(scene: Scene) -> None:
    """The attacker's FIFO and symlinks under the instance's name (where missing)."""
    steps = [] if os.path.lexists(scene.fifo) else [f"mkfifo {scene.fifo}"]
    steps += [f"ln -s {t} {p}" for p, t in scene.links.items() if not os.path.lexists(p)]
    if steps:
        res = as_attacker(["sh", "-c", " && ".join(steps)])
        assert res.returncode == 0, res.stderr


def _healthy(scene: Scene) -> None:
    """No probe failed; /ready may have said 503 only in a window the prober excuses
    (while an ingest process we killed on purpose resynced its books)."""
    excused = scene.prober.not_ready_windows
    failures = [
        f
        for f in scene.prober.failures
        if not (f[2] == "/ready" and any(f[0] <= t1 and t0 <= f[1] for t0, t1 in excused))
    ]
    assert not failures, f"/health or /ready failed {len(failures)} times: {failures[:5]}"


def test_planted_lock_files_are_neither_trusted_nor_followed(scene: Scene, report: Report) -> None:
    instance = scene.instance
    assert scene.sleeper.poll() is None, "the attacker's process was killed"
    assert scene.victim.read_text() == "precious\n"
    assert json.loads(scene.old_lock.read_text()) == scene.forged  # not reused, not rewritten
    assert scene.old_lock.stat().st_uid == ATTACKER
    # Our lock lives where the attacker cannot write, and names the real supervisor.
    path = lock_path(instance)
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
    assert os.lstat(path.parent).st_mode & 0o777 == 0o700
    assert as_attacker(["touch", str(path.parent / "mdpipe.x.lock")]).returncode != 0
    info = read_lock(instance)
    assert info is not None and info["pid"] == scene.live.run.proc.pid
    # A runtime directory of the attacker's, with a forged record in it, is refused outright.
    theirs = scene.tmp / "their-runtime"
    theirs.mkdir(mode=0o700, exist_ok=True)
    os.chown(theirs, ATTACKER, ATTACKER)
    (theirs / f"mdpipe.{instance}.lock").write_text(json.dumps(scene.forged))
    res = subprocess.run(
        [PY, "-m", "mdpipe.cli", "stop", "--instance", instance],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "MDPIPE_RUNTIME_DIR": str(theirs)},
    )
    assert res.returncode == 1 and f"owned by uid {ATTACKER}" in res.stderr, res.stderr
    assert scene.sleeper.poll() is None
    _healthy(scene)
    report(
        "another user pre-creates /tmp lock (0666, naming its pid) and symlinks the pid path",
        "ignored: lock in a private 0700 dir, O_EXCL|O_NOFOLLOW; their pid never signalled",
        None,
        "nothing",
    )


def test_squatted_ring_names_are_refused_naming_the_owner(scene: Scene, report: Report) -> None:
    """Another user's files under our ring names: the start refuses, names them, uses none."""
    res = scene.squatted
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 1, res.stderr
    assert last.startswith(f"mdpipe start: /dev/shm/mdpipe.{scene.instance}."), last
    assert f"owned by uid {ATTACKER}" in last, last
    assert all(text == "squat\n" for text in scene.squat_left.values()), scene.squat_left
    assert scene.sleeper.poll() is None
    _healthy(scene)
    report(
        "another user squats our ring names with 0666 files before start",
        "start refused in one line naming the file and uid 65534; their files untouched",
        None,
        "nothing (denial of service, detected and named)",
    )


def test_writer_restarts_leave_no_window_to_replant(scene: Scene, report: Report) -> None:
    """While our writers restart, an attacker re-creating our ring names never gets one."""
    live, instance = scene.live, scene.instance
    ours = [f"mdpipe.{instance}.{r}" for r in OUR_RINGS]
    replant = attacker_process([PY, "-c", REPLANT, "60", *ours])
    try:
        assert replant.stdout.readline().strip() == "replanting"
        t0 = time.monotonic()
        for ring in (BOOKS, "publisher"):
            old = read_status(instance, ring)
            os.kill(old.writer_pid, signal.SIGKILL)

            def back(ring: str = ring, old: object = old) -> bool:
                st = read_status(instance, ring)
                return st.writer_alive and st.writer_pid != old.writer_pid

            wait(back, 30, f"{ring}'s writer restarted")
        live.wait_synced("the books resynced after the restarts", 60)
        took = time.monotonic() - t0
        scene.prober.not_ready_windows.append((t0, time.monotonic() + 1.0))
    finally:
        replant.terminate()
        out = replant.communicate(timeout=30)[0]
    assert out.split()[-2:] == ["planted", "0"], out
    for ring in OUR_RINGS:
        st = os.lstat(f"/dev/shm/mdpipe.{instance}.{ring}")
        assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid(), ring
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{ring}: mode {st.st_mode:o}"
    _healthy(scene)
    report(
        "another user re-creates our ring names in a loop while ingest and publisher restart",
        "segments replaced by rename/link, never unlinked first: no window, every ring ours 0600",
        took,
        "frames in flight on the killed ingest's sockets",
    )


def test_planted_segments_are_never_mapped_published_or_shown(scene: Scene, report: Report) -> None:
    live, instance = scene.live, scene.instance
    _plant_links_and_fifo(scene)  # again, in case a start cleaned them away
    attacker = attacker_process([PY, "-c", PLANT_RINGS, instance, str(FAKE_PRICE), "fake"])
    try:
        assert attacker.stdout.readline().strip() == "planted", attacker.stderr.read()
        mark = len(scene.tap.books)
        sup0 = _restarts(live)
        # Let the publisher and a few scrapes meet them.
        wait(lambda: len(scene.tap.books) > mark + 200, 30, "books published meanwhile")
        planted = ["books.fake.0", "books.fake-descr.0", "books.fake-huge.0", "books.fifo.0"]
        planted += ["books.link.0", "books.alias.0"]
        # attach: the books prefix covers only our ring; a planted one by name is refused.
        with attach(instance, "books") as reader:
            assert reader.rings == [BOOKS]
            top = reader.top("BTCUSDT")
            assert top is not None and FAKE_PRICE not in top
        for ring in planted:
            started = time.monotonic()
            with pytest.raises((LayoutError, NoSuchRingError)) as exc:
                attach(instance, ring).close()
            # One typed error that names the file and why it is not trusted.
            assert f"ignored as untrusted: /dev/shm/mdpipe.{instance}.{ring} " in str(exc.value)
            assert time.monotonic() - started < 10, f"attach({ring}) took too long"
        # Our rings cannot be copied, written or truncated by them (SIGBUS needs write access).
        real = f"/dev/shm/mdpipe.{instance}.{BOOKS}"
        for argv in (["cp", real, "/tmp"], ["truncate", "-s", "0", real], ["dd", f"of={real}"]):
            assert as_attacker(argv, input="").returncode != 0, argv
        # tail, stats and /metrics show only our rings, quickly.
        res = mdpipe("tail", "BTCUSDT", "--once", "--instance", instance, timeout=30)
        assert res.returncode == 0 and f"BTCUSDT  {BOOKS}  synced" in res.stdout, res.stderr
        assert not re.search(r"(?<![\d.])104\.0*(?!\d)", res.stdout), res.stdout
        started = time.monotonic()
        res = mdpipe("stats", "--json", "--instance", instance, timeout=30)
        assert res.returncode == 0, res.stderr
        assert time.monotonic() - started < 45  # minutes before the fix; a loaded CI is slow
        snap = json.loads(res.stdout)
        shown = {r["ring"] for r in snap["rings"]}
        assert {BOOKS, "trades.sim.0"} <= shown and not shown & set(planted), shown
        assert all(r.endswith(".sim.0") for r in shown), shown  # books, trades, tickers, candles
        # ... and count what they ignored, by path and reason.
        ignored = snap["refused_segments"]
        for ring in [*planted, "books.early.0"]:
            assert f"/dev/shm/mdpipe.{instance}.{ring}" in ignored, (ring, ignored)
        refused_line = f'mdpipe_segments_refused{{instance="{instance}"}} '.encode()
        for _ in range(3):
            status, body = live.run.get("/metrics")
            assert status == 200 and body, "an empty or failed scrape"
            for ring in [*planted, "books.early"]:
                assert ring.encode() not in body, ring
            count = next(ln for ln in body.splitlines() if ln.startswith(refused_line))
            assert float(count.split()[-1]) >= len(planted) + 3, count
        # Redis never carried the fake price, and the publisher did not crash-loop.
        fake = [b for b in scene.tap.books if b[3] and FAKE_PRICE in b[3][::2]]
        assert not fake, fake[:3]
        client = redis.Redis.from_url(scene.redis.url)
        key = json.loads(client.get("orderbook:BTCUSDT"))
        client.close()
        assert key["bids"][0][0] != FAKE_PRICE and key["synced"]
        assert _restarts(live) == sup0, "a child restarted while segments were planted"
        # Nothing followed: the link targets are untouched.
        assert scene.victim.read_text() == "precious\n"
        assert attacker.poll() is None and scene.sleeper.poll() is None
        assert scene.early.poll() is None
    finally:
        attacker.kill()
        attacker.wait()
    live.check_exact()
    _healthy(scene)
    report(
        "another user plants segments: fake-price ring, FIFO, symlinks, bad dtype, 2^32-1 symbols",
        "never mapped: attach/stats/tail/metrics/publisher skip them; by name: a typed error",
        None,
        "nothing",
    )


def _restarts(live: Live) -> int:
    return read_status(live.instance, "supervisor").counters.get("restarts", 0)


def test_idle_connection_flood_under_a_low_fd_limit(scene: Scene, report: Report) -> None:
    live = scene.live
    flood = subprocess.Popen(
        [*SETPRIV, PY, "-c", FLOOD_HTTP, str(live.run.http_port), str(FLOOD)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_attacker_env(),
    )
    try:
        opened = flood.stdout.readline()
        assert opened.startswith("open"), opened
        # Meanwhile an ingest process dies: the supervisor must still be able to restart it.
        old = read_status(live.instance, BOOKS)
        t0 = time.monotonic()
        os.kill(old.writer_pid, signal.SIGKILL)

        def back() -> bool:
            st = read_status(live.instance, BOOKS)
            return st.writer_alive and st.writer_pid != old.writer_pid

        wait(back, 30, "the ingest restarted during the flood")
        live.wait_synced("the books resynced during the flood", 60)
        took = time.monotonic() - t0
        resynced = time.monotonic() + 1.0
        probes = scene.prober.probes
        wait(lambda: scene.prober.probes > probes + 8, 30, "probes during the flood")
        assert flood.poll() is None
        assert live.run.proc.poll() is None, "the supervisor died"
    finally:
        flood.stdin.close()
        flood.wait(30)
    scene.prober.not_ready_windows.append((t0, resynced))
    _healthy(scene)
    report(
        f"another user opens {FLOOD} idle HTTP connections; fd limit {FD_LIMIT}; ingest kill -9",
        "idle ones dropped oldest-first; /health /ready answer; ingest restarted",
        took,
        "nothing",
    )


@pytest.mark.parametrize(
    "kind", ["/dev/zero", "fifo", "deep nesting", "2^40 records", "5000 symbols"]
)
def test_hostile_configs_are_refused_in_one_line(scene: Scene, kind: str, report: Report) -> None:
    tmp = scene.tmp
    args: list[str]
    if kind == "/dev/zero":
        args = ["--config", "/dev/zero"]
    elif kind == "fifo":
        fifo = tmp / "config.fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        args = ["--config", str(fifo)]
    elif kind == "deep nesting":
        deep = tmp / "deep.toml"
        deep.write_text("a = " + "[" * 50_000 + "]" * 50_000 + "\n")
        args = ["--config", str(deep)]
    elif kind == "2^40 records":
        args = ["--set", f"shm.book_capacity={1 << 40}"]
    else:
        symbols = ",".join(f"S{i:04d}USDT" for i in range(5000))  # over the feed maximum
        args = ["--set", f"feeds.0.symbols={symbols}"]
    before = set(list_segments(scene.instance))
    started = time.monotonic()
    res = subprocess.run(
        [PY, "-m", "mdpipe.cli", "start", *args, "--instance", scene.instance],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    took = time.monotonic() - started
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("mdpipe start: "), lines[0]
    assert "Traceback" not in res.stderr
    assert set(list_segments(scene.instance)) == before
    assert scene.live.run.proc.poll() is None
    _healthy(scene)
    assert took < 25, f"refusing took {took:.1f} s"
    report(f"hostile config: {kind}", lines[0][:90], None, "nothing (refused before start)")


def test_stop_signals_only_our_supervisor(scene: Scene, report: Report) -> None:
    live = scene.live
    sup = live.run.proc.pid
    _healthy(scene)
    scene.prober.stop()
    res = live.run.stop()
    assert res.returncode == 0, res.stderr
    assert f"supervisor pid {sup}" in res.stdout
    assert scene.sleeper.poll() is None, "the attacker's process was signalled"
    assert json.loads(scene.old_lock.read_text()) == scene.forged
    assert not lock_path(scene.instance).exists()
    report(
        "`mdpipe stop` with forged records about",
        "signalled only the verified supervisor (lock holder, start time, uid)",
        None,
        "nothing",
    )
