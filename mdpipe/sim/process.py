"""Run `mdpipe sim` as a real subprocess (tests, demo): start, wait until ready, inject, stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

# The simulator's first stdout line (the documented contract of `mdpipe sim`).
_READY = re.compile(r"^mdpipe sim listening on http://(?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)$")
_LAUNCH = "import sys; from mdpipe.cli import main; sys.exit(main(prog_name='mdpipe'))"


class SimProcessError(RuntimeError):
    """The simulator did not start, or a control call failed; carries its log tail."""


class SimProcess:
    """`with SimProcess(["--rate", "5000"]) as sim:` runs `mdpipe sim --host 127.0.0.1 --port 0 ...`.

    Exposes `ws_url`, `rest_url`, `inject(kind, **fields)`, `stats()` and `get(path)`; the
    process is terminated (SIGTERM, then SIGKILL) when the block exits.
    """

    def __init__(
        self,
        args: list[str] | tuple[str, ...] = (),
        *,
        ready_timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = list(args)
        self.ready_timeout = ready_timeout
        self.env = env
        self.host = ""
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # Lives as long as the process: closed in __exit__, kept on disk if the block failed.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="mdpipe-sim-", suffix=".log", delete=False
        )

    @property
    def ws_url(self) -> str:
        """Base WebSocket URL, e.g. ws://127.0.0.1:PORT (append /public/stream?streams=...)."""
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """Base HTTP URL, e.g. http://127.0.0.1:PORT (append /fapi/v1/depth?...)."""
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """File holding the simulator's stderr (its log)."""
        return Path(self._log.name)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the simulator's log, for failure messages."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def start(self) -> SimProcess:
        """Launch the simulator and block until it prints its listening line."""
        cmd = [sys.executable, "-c", _LAUNCH, "sim", "--host", "127.0.0.1", "--port", "0"]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            cmd + self.args,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        first: list[bytes] = []
        reader = threading.Thread(
            target=lambda: first.append(self.proc.stdout.readline()), daemon=True
        )
        reader.start()
        reader.join(self.ready_timeout)
        line = first[0].decode(errors="replace").strip() if first else ""
        match = _READY.match(line)
        if not match:
            self.stop()
            raise SimProcessError(
                f"mdpipe sim did not become ready (first line {line!r}):\n{self.log_tail()}"
            )
        self.host, self.port = match["host"], int(match["port"])
        # Nothing else is printed on stdout, but keep the pipe drained regardless.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate the simulator (SIGTERM, then SIGKILL) and return its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._log.close()
        if exc_type is None:
            self.log_path.unlink(missing_ok=True)

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        """HTTP GET `path` on the simulator: (status, headers, body), error statuses included."""
        return self._request(urllib.request.Request(self.rest_url + path), timeout)

    def inject(self, kind: str, **fields: Any) -> dict[str, Any]:
        """POST /_sim/fault {"kind": kind, **fields}; returns what the simulator did."""
        body = orjson.dumps({"kind": kind, **fields})
        request = urllib.request.Request(
            self.rest_url + "/_sim/fault",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        status, _, answer = self._request(request, 10.0)
        if status != 200:
            raise SimProcessError(
                f"fault {kind} rejected ({status}): {answer.decode(errors='replace')}"
            )
        return orjson.loads(answer)

    def stats(self) -> dict[str, Any]:
        """GET /_sim/stats."""
        status, _, body = self.get("/_sim/stats", 10.0)
        if status != 200:
            raise SimProcessError(f"stats failed ({status})")
        return orjson.loads(body)

    @staticmethod
    def _request(
        request: urllib.request.Request, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, dict(err.headers.items()), err.read()
