"""Dashboard frames built from rings written in this process: venues, book states, the cap.

No supervisor here: two "venues" write the same symbol into their own rings, so the choice of
(ring, symbol) and the venue shown with it are checked exactly.
"""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from mdpipe.dashboard.hub import Hub, TooManyStreamsError
from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter

VENUES = {"books.bin.0": ("binance-futures", 61_800.0), "books.byb.0": ("bybit-linear", 61_790.0)}


def write_book(w: RingWriter, sid: int, mid: float, uid: int, flags: int = L.FLAG_SYNCED) -> None:
    depth = w.bids.shape[0]
    for i in range(depth):
        w.bids[i] = (mid - 0.5 - i * 0.1, 1.0 + i)
        w.asks[i] = (mid + 0.5 + i * 0.1, 2.0 + i)
    now = time.time_ns()
    w.commit_book(sid, flags, now - 1_000_000, now, uid, uid, uid - 1, depth, depth)


@pytest.fixture
def venues(instance: str):
    writers = {}
    for ring, (exchange, mid) in VENUES.items():
        books = RingWriter.create(
            instance, ring, "book", symbols=["BTCUSDT", "ETHUSDT"], depth=5, exchange=exchange
        )
        trades = RingWriter.create(
            instance,
            "trades" + ring[len("books") :],
            "trade",
            symbols=["BTCUSDT", "ETHUSDT"],
            exchange=exchange,
        )
        write_book(books, 0, mid, 100)
        now = time.time_ns()
        for k in range(3):
            trades.commit_trade(0, 0, now + k, now + k, now + k, k + 1, k + 1, k + 1, mid, 0.5, 1)
        writers[ring] = (books, trades)
    yield writers
    for books, trades in writers.values():
        books.close(unlink=True)
        trades.close(unlink=True)


def frame(hub: Hub, ring: str, symbol: str) -> dict:
    sub = hub.subscribe(ring, symbol)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            data = hub.next_frame(sub, 5.0)
            if data is not None:
                assert data.startswith(b"data: "), data[:200]
                return orjson.loads(data[len(b"data: ") :])
        raise AssertionError("no frame in 30 s")
    finally:
        hub.unsubscribe(sub)


def test_the_same_symbol_on_two_venues_is_two_choices(instance: str, venues) -> None:
    hub = Hub(instance, max_streams=4)
    try:
        for ring, (exchange, mid) in VENUES.items():
            f = frame(hub, ring, "BTCUSDT")
            m = f["market"]
            assert (m["ring"], m["symbol"], m["exchange"], m["state"]) == (
                ring,
                "BTCUSDT",
                exchange,
                "live",
            )
            assert m["bids"][0] == [mid - 0.5, 1.0] and m["asks"][0] == [mid + 0.5, 2.0]
            assert len(m["bids"]) == len(m["asks"]) == 5
            assert [t[4] for t in m["trades"]] == [3, 2, 1], "newest first, this venue's"
            assert all(t[1] == mid for t in m["trades"])
        markets = {(m["ring"], m["exchange"], m["symbol"]) for m in f["instance"]["markets"]}
        assert markets == {
            (ring, exchange, sym)
            for ring, (exchange, _) in VENUES.items()
            for sym in ("BTCUSDT", "ETHUSDT")
        }
        assert frame(hub, "books.byb.0", "ETHUSDT")["market"]["state"] == "no data"
    finally:
        hub.close()


def test_only_exact_books_from_live_writers_are_shown(instance: str, venues) -> None:
    books, _ = venues["books.bin.0"]
    hub = Hub(instance, max_streams=4)
    try:
        write_book(books, 0, 61_800.0, 101, flags=L.FLAG_RESYNC)  # rebuilding: not synced
        m = frame(hub, "books.bin.0", "BTCUSDT")["market"]
        assert m["state"] == "not synced" and m["bids"] == m["asks"] == []
        write_book(books, 0, 61_801.0, 102)
        m = frame(hub, "books.bin.0", "BTCUSDT")["market"]
        assert m["state"] == "live" and m["uid"] == "102"
        books.close()  # the writer is gone (its segment stays)
        m = frame(hub, "books.bin.0", "BTCUSDT")["market"]
        assert m["state"] == "writer down" and m["bids"] == m["asks"] == []
        ring = {r["ring"]: r for r in frame(hub, "", "")["instance"]["rings"]}["books.bin.0"]
        assert not ring["alive"] and ring["rate"] == 0.0
    finally:
        hub.close()


def test_streams_are_capped_and_a_closed_hub_ends_them(instance: str, venues) -> None:
    hub = Hub(instance, max_streams=2)
    subs = [hub.subscribe("", ""), hub.subscribe("books.byb.0", "BTCUSDT")]
    with pytest.raises(TooManyStreamsError, match="2 dashboard streams are open"):
        hub.subscribe("", "")
    hub.unsubscribe(subs.pop())
    subs.append(hub.subscribe("", ""))
    assert hub.streams == 2
    hub.close()
    assert hub.next_frame(subs[0], 5.0) is None
    with pytest.raises(TooManyStreamsError, match="stopping"):
        hub.subscribe("", "")


def test_the_sampler_runs_only_while_a_page_is_open(instance: str, venues) -> None:
    def samplers() -> int:
        return sum(t.name == "dashboard-sampler" for t in threading.enumerate())

    hub = Hub(instance, max_streams=2)
    try:
        assert samplers() == 0
        assert frame(hub, "", "")["market"]["state"] == "live"
        deadline = time.monotonic() + 30
        while samplers():  # every page closed: it stops after IDLE_STOP_S
            assert time.monotonic() < deadline, "the sampler kept running with no page open"
            time.sleep(0.05)
        assert frame(hub, "", "")["market"]["state"] == "live", "a new page starts it again"
    finally:
        hub.close()
