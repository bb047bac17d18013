"""The supervisor's HTTP endpoints: /metrics (Prometheus), /health and /ready.

Served by mdpipe.httpfront in daemon threads of the supervisor: no extra process, no new
dependency, and bounded (head deadline, pending and worker caps), so idle connections cannot
exhaust the supervisor. /ready answers 200 only when Redis answers PING (checked at most once
a second, by one request while the others use the last answer) and every ingest shard is
connected with all its books synced; otherwise 503 and reasons. One /metrics scrape runs at a
time: a second one meanwhile gets 503, so a slow scrape never takes /health or /ready with it.
"""

from __future__ import annotations

import contextlib
import threading
import time

import orjson
import redis
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from mdpipe.config import Config
from mdpipe.dashboard import Dashboard
from mdpipe.httpfront import BufferedHandler, HttpFront
from mdpipe.logs import redact
from mdpipe.metrics import registry_for
from mdpipe.shm.segment import LayoutError, SegmentMissing, read_status

REDIS_CACHE_S = 1.0
# What reading a segment may raise when it is missing, foreign or being replaced.
_SEGMENT_ERRORS = (LayoutError, OSError)


class Readiness:
    """Decides /ready: Redis reachable, every ingest shard connected and synced."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._redis_at = 0.0
        self._redis_result: str | None = "redis: not checked yet"
        self._client = redis.Redis.from_url(
            cfg.redis.url,
            password=cfg.redis_password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )

    def redis_problem(self) -> str | None:
        """None when Redis answered PING within the last second, else why not.

        One caller pings at a time; callers meanwhile get the previous answer at once.
        """
        if time.monotonic() - self._redis_at < REDIS_CACHE_S or not self._lock.acquire(
            blocking=False
        ):
            return self._redis_result
        try:
            try:
                self._client.ping()
                self._redis_result = None
            except redis.RedisError as exc:
                self._redis_result = f"redis: {redact(self.cfg.redis.url)} unreachable: {exc}"
                with contextlib.suppress(redis.RedisError):
                    self._client.connection_pool.disconnect()
            self._redis_at = time.monotonic()
        finally:
            self._lock.release()
        return self._redis_result

    def problems(self) -> list[str]:
        """Every reason the instance is not ready (empty when ready)."""
        cfg = self.cfg
        out = []
        if cfg.publisher.enabled:
            problem = self.redis_problem()
            if problem:
                out.append(problem)
            out += self._writer_problem("publisher", "publisher")
        for feed, shard, _core, _symbols in cfg.ingest_shards():
            name = f"ingest {feed.name}.{shard}"
            ring = f"books.{feed.name}.{shard}"
            problem = self._writer_problem(name, ring)
            if problem:
                out += problem
                continue
            try:
                c = read_status(cfg.instance, ring).counters
            except _SEGMENT_ERRORS as exc:  # replaced or refused between the two reads
                out.append(f"{name}: segment {ring}: {exc}")
                continue
            conns, want = c.get("g_connections", 0), c.get("g_connections_expected", 0)
            if not want or conns != want:
                out.append(f"{name}: {conns}/{want} connections up")
            synced, total = c.get("g_books_synced", 0), c.get("g_books_total", 0)
            if not total or synced != total:
                out.append(f"{name}: {synced}/{total} books synced")
        return out

    def _writer_problem(self, name: str, ring: str) -> list[str]:
        try:
            st = read_status(self.cfg.instance, ring)
        except SegmentMissing:
            return [f"{name}: not started (no segment {ring})"]
        except _SEGMENT_ERRORS as exc:
            return [f"{name}: segment {ring} refused: {exc}"]
        return [] if st.writer_alive else [f"{name}: not running"]

    def close(self) -> None:
        self._client.close()


class _Handler(BufferedHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/health":
            self._json(200, {"status": "ok", "instance": self.server.cfg.instance})
        elif path == "/ready":
            problems = self.server.readiness.problems()
            if problems:
                self._json(503, {"ready": False, "reasons": problems})
            else:
                self._json(200, {"ready": True})
        elif self.server.dashboard is not None and self.server.dashboard.handles(path):
            self.server.dashboard.serve(self)
        elif path == "/":
            text = "mdpipe: " + " ".join(self.server.endpoints) + "\n"
            self._send(200, text.encode(), "text/plain; charset=utf-8")
        else:
            self._json(
                404, {"error": f"no such endpoint {path}", "endpoints": self.server.endpoints}
            )

    def _metrics(self) -> None:
        scrape = self.server.scrape_lock
        if not scrape.acquire(blocking=False):
            self._send(503, b"another scrape is still running\n", "text/plain; charset=utf-8")
            return
        try:
            body = generate_latest(self.server.registry)
        finally:
            scrape.release()
        self._send(200, body, CONTENT_TYPE_LATEST)

    def _json(self, code: int, obj: object) -> None:
        self._send(code, orjson.dumps(obj) + b"\n", "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds is not worth a log line


ENDPOINTS = ["/metrics", "/health", "/ready"]


class _Server(HttpFront):
    cfg: Config
    registry: object
    readiness: Readiness
    scrape_lock: threading.Lock
    dashboard: Dashboard | None
    endpoints: list[str]


class HttpServer:
    """The HTTP endpoints of one instance, served from a background thread."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (OSError when the port is taken) and serve in a daemon thread."""
        server = _Server((self.cfg.http.host, self.cfg.http.port), _Handler)
        server.cfg = self.cfg
        server.registry = registry_for(self.cfg.instance)
        server.readiness = Readiness(self.cfg)
        server.scrape_lock = threading.Lock()
        server.dashboard = Dashboard(self.cfg) if self.cfg.http.dashboard else None
        server.endpoints = ENDPOINTS + (["/dashboard"] if server.dashboard else [])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2] if self._server else ("", 0)
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        if self._server.dashboard is not None:
            self._server.dashboard.close()  # ends the open event streams
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(5)
        self._server.server_close()
        self._server.readiness.close()
        self._server = None
