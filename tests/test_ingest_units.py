"""The ingest's helpers on real sockets and files: backoff, dead-letter file, REST snapshot client."""

from __future__ import annotations

import random
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from mdpipe.ingest.backoff import Backoff
from mdpipe.ingest.connection import Connected, Connection
from mdpipe.ingest.deadletter import DeadLetter
from mdpipe.ingest.inbox import Inbox
from mdpipe.ingest.rest import HttpGetter, SnapshotFetcher, SnapshotReply, SnapshotRequest


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    b = Backoff(0.1, 1.0, random.Random(1))
    for attempt in range(8):
        ceiling = min(1.0, 0.1 * 2**attempt)
        delays = []
        for _ in range(200):
            b.attempt = attempt
            delays.append(b.next_delay())
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling  # spread over the whole range, not a fixed delay
    assert b.attempt == 8
    b.reset()
    assert b.next_delay() <= 0.1


def test_dead_letter_keeps_raw_frames_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "dl" / "x.jsonl"
    dl = DeadLetter(path, max_bytes=1000)
    dl.write("malformed_json", "unexpected end", b'{"stream":"a","data":{"e":')
    dl.write("bad_number", "NaN", b'{"p":"NaN","bin":"\xff"}')
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [x["kind"] for x in lines] == ["malformed_json", "bad_number"]
    assert lines[0]["raw"] == '{"stream":"a","data":{"e":'
    assert lines[1]["raw"] == '{"p":"NaN","bin":"\\xff"}'  # undecodable bytes kept visibly
    assert lines[0]["error"] == "unexpected end" and lines[0]["ts"] > 1.6e18
    for _ in range(20):
        dl.write("big", "x", b"y" * 200)
    dl.close()
    rotated = path.with_name("x.jsonl.1")
    assert rotated.exists()
    assert path.stat().st_size <= 1000 and rotated.stat().st_size <= 1000
    assert dl.written == 22


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        status, delay, headers = self.server.script.get(self.path, (200, 0.0, {}))  # type: ignore[attr-defined]
        time.sleep(delay)
        body = orjson.dumps({"path": self.path})
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.hits.append((time.monotonic(), self.path))  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.script = {}  # type: ignore[attr-defined]
    server.hits = []  # type: ignore[attr-defined]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_http_getter_reports_status_body_and_retry_after(http_server) -> None:
    http_server.script["/limited"] = (429, 0.0, {"Retry-After": "7"})
    http_server.script["/blocked"] = (451, 0.0, {})
    g = HttpGetter(timeout=2.0)
    status, body, retry = g.get(_url(http_server, "/ok?symbol=BTCUSDT"))
    assert status == 200 and orjson.loads(body) == {"path": "/ok?symbol=BTCUSDT"} and retry is None
    assert g.get(_url(http_server, "/limited"))[0::2] == (429, 7.0)
    assert g.get(_url(http_server, "/blocked"))[0] == 451
    g.close()


def _replies(inbox: Inbox, n: int, timeout: float) -> list[SnapshotReply]:
    sel = selectors.DefaultSelector()
    sel.register(inbox, selectors.EVENT_READ)
    got: list[SnapshotReply] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        if sel.select(0.1):
            got += inbox.drain()
    sel.close()
    return got


def test_fetcher_pauses_every_request_for_retry_after(http_server) -> None:
    http_server.script["/a"] = (429, 0.0, {"Retry-After": "1"})
    inbox = Inbox()
    f = SnapshotFetcher(inbox, timeout=2.0)
    f.request(SnapshotRequest("A", _url(http_server, "/a"), 1))
    f.request(SnapshotRequest("B", _url(http_server, "/b"), 2))
    got = _replies(inbox, 2, 5.0)
    f.close()
    inbox.close()
    assert [(r.symbol, r.status, r.retry_after, r.epoch) for r in got] == [
        ("A", 429, 1.0, 1),
        ("B", 200, None, 2),
    ]
    (t_a, _), (t_b, _) = http_server.hits
    assert t_b - t_a >= 0.95  # the exchange asked for a pause: no request at all meanwhile


def test_fetcher_reports_timeouts_and_refused_connections(http_server) -> None:
    http_server.script["/slow"] = (200, 1.0, {})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    inbox = Inbox()
    f = SnapshotFetcher(inbox, timeout=0.3)
    f.request(SnapshotRequest("S", _url(http_server, "/slow"), 1))
    f.request(SnapshotRequest("R", f"http://127.0.0.1:{closed_port}/x", 1))
    f.request(SnapshotRequest("OK", _url(http_server, "/fine"), 1))
    got = {r.symbol: r for r in _replies(inbox, 3, 5.0)}
    f.close()
    inbox.close()
    assert got["S"].status == 0 and "timed out" in got["S"].error
    assert got["R"].status == 0 and "Refused" in got["R"].error
    assert got["OK"].status == 200  # the client recovered from both


def test_handshake_failure_arrives_in_the_inbox() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    conn = Connection(
        "public#0", f"ws://127.0.0.1:{port}/public/stream?streams=x@depth", {}, Backoff(0.1, 1)
    )
    conn.start_connect(inbox)
    sel = selectors.DefaultSelector()
    sel.register(inbox, selectors.EVENT_READ)
    assert sel.select(5)
    (done,) = inbox.drain()
    assert isinstance(done, Connected) and done.ws is None and done.attempt == 1
    assert "Refused" in done.error
    assert 0 <= conn.schedule_retry(time.monotonic()) <= 0.1
    sel.close()
    inbox.close()
