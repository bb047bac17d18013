"""Shared fixtures: a real redis-server on a free port, unique instance names, clean /dev/shm."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import posix_ipc
import pytest
import redis

from mdpipe import hot_path as hot_paths
from mdpipe.shm.segment import list_segments, shm_name
from mdpipe.venues.tapes import FUTURES_TAPE, tape_path

REPO = Path(__file__).resolve().parent.parent


def _port_pool() -> range:
    """Ports just below the kernel's ephemeral range: no connect() or bind(0) anywhere on the
    machine takes one of them between our finding it free and a server binding it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 12000), low)


_PORT_POOL = _port_pool()
_PORTS_GIVEN: set[int] = set()
_PORT_RANDOM = random.SystemRandom()  # not the tests' seeded `random`: workers must differ


def free_port() -> int:
    """A TCP port nobody listens on right now, for a server a test starts a moment later.

    Drawn at random outside the ephemeral range and never twice in one process, so the only
    way to lose it meanwhile is another xdist worker drawing the same one (1 in ~12,000).
    """
    for _ in range(200):
        port = _PORT_RANDOM.choice(_PORT_POOL)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_REFUSING: list[socket.socket] = []


def refused_port() -> int:
    """A port bound here and never listened on, for the rest of the session: a connection to
    it is refused, and no server of another test (another xdist worker's) can take it, as one
    could a port that was merely free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _REFUSING.append(s)
    return s.getsockname()[1]


class RedisServer:
    """A private redis-server process on a free port; can be stopped and started again."""

    def __init__(self, tmp: Path, port: int | None = None, password: str | None = None) -> None:
        self.tmp = tmp
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it; a port found free but taken meanwhile (by another xdist worker's server)
        makes redis-server exit: a port of our choosing is then chosen again."""
        for _ in range(5):
            if self._start_once():
                self.fixed_port = True  # a restart comes back where clients look for it
                return
            self.port = free_port()
        raise RuntimeError("redis-server found no free port in 5 tries")

    def _start_once(self) -> bool:
        """Start redis-server; False if it exited (its port was taken), True once it answers."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        args = [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.tmp),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                if self.fixed_port:
                    raise RuntimeError(f"redis-server could not listen on {self.port}")
                return False
            # The server answering is ours, not one of another test on the same port.
            client = redis.Redis(port=self.port, password=self.password, socket_timeout=2)
            try:
                with contextlib.suppress(redis.RedisError, OSError):
                    if client.info("server")["process_id"] == self.proc.pid:
                        return True
            finally:
                client.close()
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session", autouse=True)
def private_tempdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Temporary files of the tests and of every process they start (simulator logs and the
    like) go below pytest's own base directory, not loose into /tmp."""
    path = tmp_path_factory.mktemp("tempfiles")
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(path)
    tempfile.tempdir = str(path)
    yield path
    tempfile.tempdir = saved[1]
    if saved[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved[0]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class LocalRedisCluster:
    """A Redis Cluster of `masters` redis-server processes on free ports (no replicas)."""

    def __init__(self, tmp: Path, masters: int = 3) -> None:
        self.tmp = tmp
        self.servers = [RedisServer(tmp / f"node{i}", cluster_port()) for i in range(masters)]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def start(self) -> None:
        for server in self.servers:
            server.tmp.mkdir(parents=True, exist_ok=True)
            server.extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            server.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed: run `make test`, which installs it")
        addrs = [f"127.0.0.1:{s.port}" for s in self.servers]
        done = subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        deadline = time.monotonic() + 30
        for server in self.servers:
            client = redis.Redis(port=server.port)
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the local Redis Cluster did not become ready")
                time.sleep(0.05)
            client.close()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A 3-master Redis Cluster shared by a module's tests (which must not stop its nodes)."""
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def remove_segments(instance: str) -> None:
    for inst, ring in list_segments(instance):
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(shm_name(inst, ring))


_INSTANCES: list[str] = []


def unique_instance() -> str:
    """A fresh instance name; its segments are removed at the end of the session at the latest,
    so a test that kills a writer or fails midway does not leave rings in /dev/shm."""
    name = f"t{uuid.uuid4().hex[:10]}"
    _INSTANCES.append(name)
    return name


@pytest.fixture(scope="session", autouse=True)
def _remove_test_segments() -> Iterator[None]:
    yield
    for name in _INSTANCES:
        remove_segments(name)


@pytest.fixture
def instance() -> Iterator[str]:
    """A unique instance name; its segments are removed afterwards."""
    name = unique_instance()
    yield name
    remove_segments(name)


@pytest.fixture
def tapes() -> Path:
    """The recorded tapes' directory (FileNotFoundError says where it looked)."""
    return tape_path(FUTURES_TAPE).parent


@pytest.fixture(params=hot_paths.PATHS)
def hot_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on the C hot path, then on the pure-Python one (book and level readers)."""
    with hot_paths.use(request.param):
        yield request.param
