"""Hostile or unlucky surroundings, one piece at a time: links, floods, dead peers, closed pipes.

The whole instance under a hostile second user is tests/chaos/test_hostile_local.py; this
file proves each defence on its own, in this process where it can be watched closely.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import refused_port
from test_ingest_support import IngestProcess, write_config
from test_publisher import SYMBOLS, book_writer, make_cfg, publisher, put_book

from mdpipe import httpfront
from mdpipe.httpfront import BufferedHandler, HttpFront
from mdpipe.ingest.deadletter import DeadLetter

REPO = Path(__file__).resolve().parent.parent


def wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ----- the dead-letter file ----------------------------------------------------------------


def _refused(path: Path) -> OSError:
    dl = DeadLetter(path)
    with pytest.raises(OSError) as exc:
        dl.write("malformed_json", "x", b"{")
    dl.close()
    return exc.value


def test_dead_letters_never_go_through_a_link_or_into_a_foreign_file(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    # The file itself is a symlink, or a FIFO (which would block a plain open).
    linked = tmp_path / "a"
    linked.mkdir(mode=0o700)
    (linked / "x.jsonl").symlink_to(victim)
    assert "symlink" in str(_refused(linked / "x.jsonl"))
    fifo_dir = tmp_path / "b"
    fifo_dir.mkdir(mode=0o700)
    os.mkfifo(fifo_dir / "x.jsonl")
    assert "FIFO" in str(_refused(fifo_dir / "x.jsonl"))
    # The directory is a symlink to somewhere else.
    (tmp_path / "c").symlink_to(linked)
    assert "symlink" in str(_refused(tmp_path / "c" / "y.jsonl"))
    assert not (linked / "y.jsonl").exists()
    # A directory any user may write to (no sticky bit), or one owned by someone else.
    open_dir = tmp_path / "d"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    assert "not writable by others" in str(_refused(open_dir / "x.jsonl"))
    foreign = tmp_path / "e"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    assert "owned by uid 65534" in str(_refused(foreign / "x.jsonl"))
    # A file in our directory that another user owns.
    own = tmp_path / "f"
    own.mkdir(mode=0o700)
    (own / "x.jsonl").write_text("")
    os.chown(own / "x.jsonl", 65534, 65534)
    assert "not a regular file of ours" in str(_refused(own / "x.jsonl"))
    assert victim.read_text() == "precious\n"
    # And the ordinary case still works, rotation included.
    ok = DeadLetter(tmp_path / "g" / "x.jsonl", max_bytes=300)
    for _ in range(5):
        ok.write("big", "x", b"y" * 100)
    ok.close()
    assert (tmp_path / "g" / "x.jsonl.1").exists()


# ----- counting every failed connection attempt --------------------------------------------


def test_every_failed_connection_attempt_is_counted(tmp_path: Path, instance: str) -> None:
    port = refused_port()
    cfg = write_config(
        tmp_path / "ingest.toml",
        instance,
        ws_url=f"ws://127.0.0.1:{port}",
        rest_url=f"http://127.0.0.1:{port}",
        market="futures",
        symbols=["BTCUSDT"],
        reconnect_initial=0.01,
        reconnect_max=0.05,
    )
    with IngestProcess(cfg, instance) as ingest:
        c = ingest.wait_for(
            "20 failed connection attempts",
            lambda c: c.get("connect_failures", 0) >= 20 and c.get("reconnects", 0) >= 20,
            timeout=60,
        )
        assert c["g_connections"] == 0
        assert ingest.stop() == 0


# ----- example scripts in a pipeline -------------------------------------------------------


def test_redis_subscriber_into_head_prints_no_traceback(redis_server, instance: str) -> None:
    """`redis_subscriber.py ... | head -1` against a real publisher: one line, no traceback."""
    bw = book_writer(instance)
    cfg = make_cfg(instance, redis_server.url)
    stop = threading.Event()

    def feed() -> None:  # keep books coming until head has gone and the pipe broke
        i = 0
        while not stop.is_set():
            put_book(bw, 0, i)
            i += 1
            time.sleep(0.01)

    with publisher(cfg, rings=1):
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            res = subprocess.run(
                f"{sys.executable} readers/redis_subscriber.py --url {redis_server.url} "
                f"--wait 10 {SYMBOLS[0]} | head -1",
                shell=True,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            stop.set()
            feeder.join()
    bw.close(unlink=True)
    assert res.stdout.startswith(SYMBOLS[0]) or res.stdout.startswith("snapshot ")
    assert len(res.stdout.splitlines()) == 1, res.stdout
    assert res.stderr == "", res.stderr


# ----- the HTTP front end ------------------------------------------------------------------


class _Echo(BufferedHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/slow":
            self.server.slow_started.set()
            self.server.release_slow.wait(30)
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def front() -> Iterator[HttpFront]:
    server = HttpFront(("127.0.0.1", 0), _Echo)
    server.slow_started = threading.Event()
    server.release_slow = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release_slow.set()
    server.shutdown()
    thread.join(5)
    server.server_close()


def _get(server: HttpFront, path: str, timeout: float = 5) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_idle_connections_neither_pile_up_nor_keep_requests_out(front: HttpFront) -> None:
    port = front.server_address[1]
    idle = []
    for _ in range(front.max_pending * 2):
        idle.append(socket.create_connection(("127.0.0.1", port)))
    try:
        for _ in range(20):  # the oldest idle ones make room for every new request
            assert _get(front, "/health") == (200, b"/health")
        wait(lambda: front.dropped >= front.max_pending, 10, "the cap to drop idle connections")
        # Idle past the head deadline: the rest are closed as well.
        wait(lambda: front.dropped >= 2 * front.max_pending, 3 * httpfront.HEAD_TIMEOUT, "expiry")
        closed = 0
        for s in idle:
            s.settimeout(5)
            with contextlib.suppress(OSError):
                closed += s.recv(1) == b""
        assert closed >= len(idle) - 1  # one may still be the one being read
    finally:
        for s in idle:
            s.close()


def test_a_slow_request_leaves_others_served_and_an_oversized_head_is_refused(
    front: HttpFront,
) -> None:
    slow = threading.Thread(target=_get, args=(front, "/slow", 30), daemon=True)
    slow.start()
    assert front.slow_started.wait(10)
    assert _get(front, "/health") == (200, b"/health")  # served while /slow still runs
    with socket.create_connection(("127.0.0.1", front.server_address[1])) as s:
        s.sendall(b"GET / HTTP/1.0\r\nX-Pad: " + b"a" * (httpfront.HEAD_MAX_BYTES + 10))
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.0 431")
    front.release_slow.set()
    slow.join(10)


def test_the_listen_backlog_and_pending_cap_follow_the_fd_limit() -> None:
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64));"
        "from mdpipe.httpfront import pending_cap; print(pending_cap())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == 16
    assert httpfront.LISTEN_BACKLOG >= 1024


# ----- the supervisor when descriptors run out ----------------------------------------------

SPAWN_UNDER_EMFILE = r"""
import os, resource, sys, time
from mdpipe import config as C
from mdpipe.supervisor import Child, ChildSpec, Supervisor

sets = [f"instance={sys.argv[1]}", "sim.enabled=false", "publisher.enabled=false"]
cfg = C.load(None, overrides=[*sets, "http.enabled=false"], env={})
sup = Supervisor(cfg, None, [])
sup.lock.acquire()
child = Child(ChildSpec("x", [sys.executable, "-c", "pass"]))
sup.children = [child]
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
hog = []
try:
    while True:
        hog.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
sup._spawn(child)  # EMFILE: must not raise
print("emfile", child.proc is None, child.next_start > time.monotonic(), flush=True)
for fd in hog:
    os.close(fd)
sup._spawn(child)
print("later", child.proc is not None and child.proc.wait() == 0, flush=True)
sup.lock.release()
"""


def test_supervisor_survives_running_out_of_descriptors(instance: str) -> None:
    res = subprocess.run(
        [sys.executable, "-c", SPAWN_UNDER_EMFILE, instance],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["emfile True True", "later True"], res.stdout
    assert "cannot start x: Too many open files; retrying in" in res.stderr


# ----- nothing left in /tmp -----------------------------------------------------------------


def test_temporary_files_of_tests_stay_under_pytests_directory(private_tempdir: Path) -> None:
    """A simulator's log (kept when a test fails) lands below pytest's base directory."""
    from mdpipe.sim.process import SimProcess

    sim = SimProcess([])
    try:
        assert sim.log_path.parent == private_tempdir
    finally:
        sim._log.close()
        sim.log_path.unlink()
    assert os.environ["TMPDIR"] == str(private_tempdir)  # and for every process a test starts
