"""The ingest shard's control endpoint: a Unix socket in the user's private runtime directory.

`mdpipe subscribe|unsubscribe` talk to it. It is a Unix socket rather than a route of the
supervisor's HTTP server because only the process that owns the rings may change them (one
writer per ring), and a Unix socket is reachable only through the file system: it lives
in a directory of ours with mode 0700, the socket itself is 0600, and every peer's uid
(SO_PEERCRED) must be ours. Nothing listens on a port.

Protocol: one JSON line each way. Request `{"op": "subscribe"|"unsubscribe"|"list",
"symbols": [...]}`; answer `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
A request either applies to every symbol it names or to none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mdpipe import runtime
from mdpipe.ingest.inbox import Inbox

REQUEST_MAX = 64 * 1024  # bytes of one request line
REPLY_TIMEOUT = 30.0  # seconds the loop gets to answer
OPS = ("subscribe", "unsubscribe", "list")
log = logging.getLogger("mdpipe.ingest.control")


class ControlError(Exception):
    """The control endpoint cannot be used (missing, not ours, not answering)."""


def runtime_dir() -> Path:
    """The user's private runtime directory (`mdpipe.runtime`); ControlError if not ours."""
    try:
        return runtime.runtime_dir()
    except (OSError, runtime.RuntimeStateError) as exc:
        raise ControlError(str(exc)) from None


def socket_path(instance: str, feed: str, shard: int) -> Path:
    """Where ingest shard `shard` of `feed` of `instance` listens."""
    return runtime_dir() / f"mdpipe.{instance}.{feed}.{shard}.ctl"


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


@dataclass
class ControlRequest:
    """One request handed to the ingest loop, which answers through `reply`."""

    op: str
    symbols: list[str]
    reply: queue.SimpleQueue[dict[str, Any]] = field(default_factory=queue.SimpleQueue)


class ControlServer:
    """Accepts requests on the shard's socket and hands them to the loop through its inbox.

    `check` runs on this thread before the loop sees a request (blocking checks, e.g. asking
    the venue whether a symbol exists); it returns (error message, bad input) or None.
    """

    def __init__(
        self, path: Path, inbox: Inbox, check: Callable[[str, list[str]], tuple[str, bool] | None]
    ) -> None:
        self.path = path
        self._inbox = inbox
        self._check = check
        self._remove_stale(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old)
        self._sock.listen(8)
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()

    @staticmethod
    def _remove_stale(path: Path) -> None:
        """A socket of ours left by a crashed shard is replaced; anything else is refused."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            raise ControlError(f"{path} exists and is not a control socket of ours: remove it")
        path.unlink()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    self._serve(conn)
                except OSError as exc:
                    log.warning("control request failed: %s", exc)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        if _peer_uid(conn) != os.geteuid():
            conn.sendall(_line({"ok": False, "error": "refused: not the instance's user"}))
            return
        data = b""
        while not data.endswith(b"\n") and len(data) <= REQUEST_MAX:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        conn.sendall(_line(self._answer(data)))

    def _answer(self, data: bytes) -> dict[str, Any]:
        try:
            req = orjson.loads(data)
        except orjson.JSONDecodeError:
            return {"ok": False, "error": "the request is not one JSON line"}
        op = req.get("op") if isinstance(req, dict) else None
        symbols = req.get("symbols", []) if isinstance(req, dict) else None
        if op not in OPS:
            return {"ok": False, "error": f"op must be one of {', '.join(OPS)}"}
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            return {"ok": False, "error": "symbols must be a list of strings"}
        problem = self._check(op, symbols)
        if problem:
            return {"ok": False, "error": problem[0], "usage": problem[1]}
        request = ControlRequest(op, symbols)
        self._inbox.post(request)
        try:
            return request.reply.get(timeout=REPLY_TIMEOUT)
        except queue.Empty:
            return {"ok": False, "error": f"the shard did not answer in {REPLY_TIMEOUT:.0f} s"}

    def close(self) -> None:
        """Stop accepting and remove the socket."""
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=1.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj) + b"\n"


def call(
    path: Path, op: str, symbols: list[str], timeout: float = REPLY_TIMEOUT + 5
) -> dict[str, Any]:
    """Send one request to a shard's control socket; ControlError if it cannot be reached."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ControlError(f"no control socket {path}: is the instance running?") from None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
        raise ControlError(f"{path} is not a control socket of ours: refusing to use it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(_line({"op": op, "symbols": symbols}))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise ControlError(f"cannot reach {path}: {exc}") from None
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ControlError(f"{path} answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise ControlError(f"{path} answered something that is not a JSON object")
    return answer
