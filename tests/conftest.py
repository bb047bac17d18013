"""Shared fixtures: a real redis-server on a free port, unique instance names, clean /dev/shm."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import posix_ipc
import pytest

from mdpipe.shm.segment import list_segments, shm_name
from mdpipe.venues.tapes import FUTURES_TAPE, tape_path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server process on a free port; can be stopped and started again."""

    def __init__(self, tmp: Path, port: int | None = None, password: str | None = None) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
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
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def remove_segments(instance: str) -> None:
    for inst, ring in list_segments(instance):
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(shm_name(inst, ring))


@pytest.fixture
def instance() -> Iterator[str]:
    """A unique instance name; its segments are removed afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    remove_segments(name)


@pytest.fixture
def tapes() -> Path:
    """The recorded tapes' directory (FileNotFoundError says where it looked)."""
    return tape_path(FUTURES_TAPE).parent
