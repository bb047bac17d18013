"""A bounded HTTP front end: no thread for an idle connection, no connection without a deadline.

http.server gives each connection a thread that blocks reading the request, forever by
default: 220 idle connections from any local user exhaust the supervisor's descriptors.
Here one thread accepts connections and collects request heads without blocking; only a
complete head reaches a worker thread (a BaseHTTPRequestHandler, as usual). Limits:
- a request head must arrive within HEAD_TIMEOUT and fit HEAD_MAX_BYTES;
- at most `max_pending` connections wait for their head: past that the oldest one that has
  sent nothing is dropped (after reading whatever the others sent), so a flood of idle
  connections cannot keep a fresh /health probe out;
- at most MAX_WORKERS requests run at once, others are answered 503 at once;
- a worker's socket writes time out after WRITE_TIMEOUT (a client that never reads);
- the listen backlog is LISTEN_BACKLOG; EMFILE on accept drops the oldest pending connection.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import logging
import resource
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from socketserver import _SocketWriter

log = logging.getLogger("mdpipe.http")

HEAD_TIMEOUT = 5.0
HEAD_MAX_BYTES = 16 << 10
WRITE_TIMEOUT = 10.0
MAX_WORKERS = 16
MAX_PENDING = 256
LISTEN_BACKLOG = 1024
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
)
_TOO_LARGE = (
    b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


def pending_cap() -> int:
    """Waiting connections allowed: MAX_PENDING, or a quarter of the fd limit if lower."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_PENDING
    return max(8, min(MAX_PENDING, soft // 4))


class _Request:
    """A connection whose request head arrived in full: what a handler reads and writes."""

    def __init__(self, sock: socket.socket, head: bytes) -> None:
        self.sock = sock
        self.head = head


class BufferedHandler(BaseHTTPRequestHandler):
    """A BaseHTTPRequestHandler that reads the head the front end already collected."""

    request: _Request

    def setup(self) -> None:
        self.connection = self.request.sock
        self.connection.settimeout(WRITE_TIMEOUT)
        self.rfile = io.BytesIO(self.request.head)
        self.wfile = _SocketWriter(self.connection)

    def finish(self) -> None:
        self.wfile.flush()
        self.rfile.close()


class _Pending:
    __slots__ = ("sock", "addr", "buf", "since")

    def __init__(self, sock: socket.socket, addr: object) -> None:
        self.sock, self.addr, self.buf, self.since = sock, addr, bytearray(), time.monotonic()


class HttpFront:
    """Serves `handler_class` on (host, port); the handler sees `self.server` = this object."""

    def __init__(self, address: tuple[str, int], handler_class: type[BufferedHandler]) -> None:
        self.handler_class = handler_class
        self.listener = socket.create_server(address, backlog=LISTEN_BACKLOG, reuse_port=False)
        self.listener.setblocking(False)
        self.server_address = self.listener.getsockname()
        self.max_pending = pending_cap()
        self._pending: collections.OrderedDict[int, _Pending] = collections.OrderedDict()
        self._workers = threading.BoundedSemaphore(MAX_WORKERS)
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self.dropped = 0  # connections closed for a deadline, the cap or an oversized head
        self.busy = 0  # requests answered 503 because every worker was taken

    # -- the accepting thread

    def serve_forever(self) -> None:
        """Accept and collect request heads until shutdown(); run on its own thread."""
        self._sel.register(self.listener, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                for key, _ in self._sel.select(0.2):
                    if key.data is None:
                        self._accept()
                    else:
                        self._read(key.data)
                self._expire()
        finally:
            for p in list(self._pending.values()):
                self._drop(p)
            self._sel.close()

    def _accept(self) -> None:
        for _ in range(64):  # a bounded batch, then look at the pending ones again
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._drop_oldest()  # make room; the kernel keeps the rest queued
                return
            sock.setblocking(False)
            if len(self._pending) >= self.max_pending:
                self._read_ready()  # heads that already arrived leave the queue first
            while len(self._pending) >= self.max_pending:
                self._drop_oldest()
            p = _Pending(sock, addr)
            self._pending[sock.fileno()] = p
            self._sel.register(sock, selectors.EVENT_READ, p)
            self._read(p)  # a client usually sends its request with the connect

    def _read(self, p: _Pending) -> None:
        try:
            chunk = p.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(p)
            return
        p.buf += chunk
        end = p.buf.find(b"\r\n\r\n")
        if end < 0:
            end = p.buf.find(b"\n\n")
        if end < 0:
            if len(p.buf) > HEAD_MAX_BYTES:
                self._reply_and_drop(p, _TOO_LARGE)
            return
        self._unwatch(p)
        if not self._workers.acquire(blocking=False):
            self.busy += 1
            self._reply_and_drop(p, _BUSY, unwatched=True)
            return
        p.sock.setblocking(True)
        request = _Request(p.sock, bytes(p.buf))
        threading.Thread(
            target=self._work, args=(request, p.addr), name="http-worker", daemon=True
        ).start()

    def _expire(self) -> None:
        cutoff = time.monotonic() - HEAD_TIMEOUT
        while self._pending:
            p = next(iter(self._pending.values()))
            if p.since > cutoff:
                return
            self._drop(p)

    def _read_ready(self) -> None:
        """Read every pending connection that has data now (no waiting)."""
        for key, _ in self._sel.select(0):
            if key.data is not None:
                self._read(key.data)

    def _drop_oldest(self) -> None:
        """Drop the oldest connection that sent nothing yet, else the oldest of all."""
        if not self._pending:
            return
        victim = next((p for p in self._pending.values() if not p.buf), None)
        self._drop(victim or next(iter(self._pending.values())))

    def _unwatch(self, p: _Pending) -> None:
        self._pending.pop(p.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(p.sock)

    def _drop(self, p: _Pending) -> None:
        self.dropped += 1
        self._unwatch(p)
        p.sock.close()

    def _reply_and_drop(self, p: _Pending, reply: bytes, *, unwatched: bool = False) -> None:
        with contextlib.suppress(OSError):
            p.sock.send(reply)  # non-blocking: best effort, never waits for the client
        if unwatched:
            self.dropped += 1
            p.sock.close()
        else:
            self._drop(p)

    # -- workers

    def _work(self, request: _Request, addr: object) -> None:
        try:
            self.handler_class(request, addr, self)
        except Exception:  # noqa: BLE001 - a broken client must not kill the worker silently
            log.debug("http request from %s failed", addr, exc_info=True)
        finally:
            with contextlib.suppress(OSError):
                request.sock.shutdown(socket.SHUT_WR)
            request.sock.close()
            self._workers.release()

    # -- lifecycle

    def shutdown(self) -> None:
        """Stop accepting (serve_forever returns within 0.2 s)."""
        self._stop.set()

    def server_close(self) -> None:
        """Close the listening socket."""
        self.listener.close()
