"""The ingest's parts on real sockets, files and rings: backoff, dead letters, REST, books."""

from __future__ import annotations

import contextlib
import logging
import random
import selectors
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from conftest import refused_port

from mdpipe import readers
from mdpipe.ingest.backoff import Backoff
from mdpipe.ingest.connection import Connected, Connection
from mdpipe.ingest.counters import COUNTERS, Counters
from mdpipe.ingest.deadletter import DeadLetter
from mdpipe.ingest.inbox import Inbox
from mdpipe.ingest.rest import HttpGetter, SnapshotFetcher, SnapshotReply, SnapshotRequest
from mdpipe.ingest.symbolbook import SymbolBook
from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter
from mdpipe.venues.binance.sync import Action, SnapshotStatus, book_sync
from mdpipe.venues.binance.wire import DepthDiff, DepthSnapshot


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
        # Recorded on arrival: a hit logged after the reply races the client reading it.
        self.server.hits.append((time.monotonic(), self.path))  # type: ignore[attr-defined]
        status, delay, headers = self.server.script.get(self.path, (200, 0.0, {}))  # type: ignore[attr-defined]
        time.sleep(delay)
        body = orjson.dumps({"path": self.path})
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A client that gave up first is what the timeout tests make.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

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
    got = _replies(inbox, 2, 30.0)
    f.close()
    inbox.close()
    assert [(r.symbol, r.status, r.retry_after, r.epoch) for r in got] == [
        ("A", 429, 1.0, 1),
        ("B", 200, None, 2),
    ]
    (t_a, _), (t_b, _) = http_server.hits
    assert t_b - t_a >= 0.95  # the exchange asked for a pause: no request at all meanwhile


def test_fetcher_reports_timeouts_and_refused_connections(http_server) -> None:
    # A timeout a loaded machine cannot hit by accident on /fine; /slow takes three times it.
    http_server.script["/slow"] = (200, 6.0, {})
    closed_port = refused_port()
    inbox = Inbox()
    f = SnapshotFetcher(inbox, timeout=2.0)
    f.request(SnapshotRequest("S", _url(http_server, "/slow"), 1))
    f.request(SnapshotRequest("R", f"http://127.0.0.1:{closed_port}/x", 1))
    f.request(SnapshotRequest("OK", _url(http_server, "/fine"), 1))
    got = {r.symbol: r for r in _replies(inbox, 3, 30.0)}
    f.close()
    inbox.close()
    assert got["S"].status == 0 and "timed out" in got["S"].error
    assert got["R"].status == 0 and "Refused" in got["R"].error
    assert got["OK"].status == 200  # the client recovered from both


def test_handshake_failure_arrives_in_the_inbox() -> None:
    port = refused_port()
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


def _diff(u: int, bids=(), asks=(), pu: int | None = None) -> DepthDiff:
    return DepthDiff(
        "BTCUSDT",
        1_723_161_256_000 + u,
        0,
        u,
        u,
        u - 1 if pu is None else pu,
        [p for p, _ in bids],
        [q for _, q in bids],
        [p for p, _ in asks],
        [q for _, q in asks],
    )


def test_symbol_book_records_flags_and_stale_marker(instance: str) -> None:
    """Record per applied diff: RESYNC first, PARTIAL when thin, CROSSED flagged and reported,
    and one empty flags-0 record when the book breaks."""
    w = RingWriter.create(instance, "books.u.0", "book", symbols=["BTCUSDT"], depth=3,
                          counters=COUNTERS)  # fmt: skip
    ctr = Counters(w)
    reported: list[tuple[str, str, bytes | None]] = []
    sb = SymbolBook("BTCUSDT", 0, book_sync("futures"), w, ctr, Backoff(0.1, 1),
                    lambda *a: reported.append(a), logging.getLogger("t"))  # fmt: skip
    reader = readers.attach(instance, "books.u.0", kind="book")
    assert sb.on_diff(_diff(100, bids=[(9.0, 1.0)]), 1, b"") is Action.BUFFERED
    assert sb.on_diff(_diff(101, asks=[(11.0, 2.0)]), 2, b"") is Action.BUFFERED
    assert sb.wants_snapshot
    snap = DepthSnapshot(100, [10.0, 9.0, 8.0, 7.0], [1.0] * 4, [11.0, 12.0], [1.0, 1.0])
    assert sb.on_snapshot(snap, 50) is SnapshotStatus.SYNCED
    # Both buffered diffs span or follow the snapshot: a record each, with its receive time.
    rec = reader.poll().copy()
    assert rec["flags"] == L.FLAG_SYNCED | L.FLAG_RESYNC | L.FLAG_PARTIAL
    assert (rec["last_update_id"], rec["prev_update_id"], rec["recv_ts_ns"]) == (100, 99, 1)
    rec = reader.poll().copy()
    assert rec["flags"] == L.FLAG_SYNCED | L.FLAG_PARTIAL
    assert (rec["last_update_id"], rec["prev_update_id"], rec["recv_ts_ns"]) == (101, 100, 2)
    assert rec["bids"].tolist() == [[10.0, 1.0], [9.0, 1.0], [8.0, 1.0]]
    assert rec["asks"].tolist() == [[11.0, 2.0], [12.0, 1.0], [0.0, 0.0]]
    assert (rec["bid_count"], rec["ask_count"]) == (3, 2)
    sb.on_diff(_diff(102, asks=[(13.0, 1.0)]), 3, b"")
    assert reader.poll()["flags"] == L.FLAG_SYNCED
    raw = b'{"crossing":1}'
    sb.on_diff(_diff(103, bids=[(11.5, 1.0)]), 4, raw)
    rec = reader.poll()
    assert rec["flags"] == L.FLAG_SYNCED | L.FLAG_CROSSED
    assert ctr.value("crossed_books") == 1 and reported[0][0] == "crossed_book"
    assert reported[0][2] == raw
    sb.on_diff(_diff(104, bids=[(11.5, 0.0)]), 5, b"")
    assert reader.poll()["flags"] == L.FLAG_SYNCED
    assert reader.top("BTCUSDT") == (10.0, 1.0, 11.0, 2.0)
    # A gap: one stale record with no levels, then nothing until a new snapshot.
    assert sb.on_diff(_diff(110, pu=108), 6, b"") is Action.RESYNC
    rec = reader.poll()
    assert rec["flags"] == 0 and rec["bid_count"] == rec["ask_count"] == 0
    assert not rec["bids"].any() and not rec["asks"].any()
    assert rec["last_update_id"] == 104
    assert reader.top("BTCUSDT") is None and reader.poll() is None
    assert ctr.value("gaps") == 1 and ctr.value("resyncs") == 1
    assert ctr.value("book_records") == 6
    reader.close()
    w.close()
