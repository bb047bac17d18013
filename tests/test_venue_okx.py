"""OKX v5 sans-IO protocol: parser, checksum, sync machine, REST start, rollover, plan, pacing.

Fed events and bytes, no sockets.
"""

from __future__ import annotations

import orjson
import pytest

from mdpipe.feeds.errors import FeedError
from mdpipe.instrument import Instrument
from mdpipe.venues.okx.checksum import book_checksum, checksum_string, level_checksum
from mdpipe.venues.okx.events import PONG, BookMessage, ErrorEvent, Notice, Subscribed, TopOfBook
from mdpipe.venues.okx.local_book import (
    APPLIED,
    BUFFERED,
    DROPPED,
    LOADED,
    RESYNC,
    UNCHANGED,
    OkxLocalBook,
)
from mdpipe.venues.okx.pacing import ConnectPacer, Keepalive, ResyncPacer, SubscribeBudget
from mdpipe.venues.okx.parser import OkxParser, parse_rest_books
from mdpipe.venues.okx.protocol import (
    MAX_SUBSCRIBE_BYTES,
    Arg,
    books_url,
    describe_error,
    exchange_name,
    instrument,
    op_messages,
    plan_connections,
)
from mdpipe.venues.okx.sync import START_REST, SnapshotStatus

INST = "BTC-USDT-SWAP"
PARSER = OkxParser()


def frame(action, bids, asks, seq=None, prev=None, checksum=0, inst=INST, ts="1750000000100"):
    """A raw `books` push as OKX writes it (fields absent when None)."""
    d = {"asks": asks, "bids": bids, "ts": ts, "checksum": checksum}
    if prev is not None:
        d["prevSeqId"] = prev
    if seq is not None:
        d["seqId"] = seq
    return orjson.dumps(
        {"arg": {"channel": "books", "instId": inst}, "action": action, "data": [d]}
    )


def msg(action, bids=(), asks=(), seq=None, prev=None, checksum=0) -> BookMessage:
    """A parsed `books` message; levels as (px, sz) string pairs."""
    b = [[p, q, "0", "1"] for p, q in bids]
    a = [[p, q, "0", "1"] for p, q in asks]
    return PARSER.parse(frame(action, b, a, seq, prev, checksum))


def with_checksum(action, bids, asks, book_bids, book_asks, seq=None, prev=None):
    """A message carrying the checksum of the book (best-first levels) it should lead to."""
    cs = level_checksum([list(x) for x in book_bids], [list(x) for x in book_asks])
    return msg(action, bids, asks, seq, prev, cs)


SNAP_BIDS = [("100.1", "5"), ("100.0", "3")]
SNAP_ASKS = [("100.2", "4"), ("100.3", "7")]


def snapshot(seq=10, checksum=True):
    cs = level_checksum(SNAP_BIDS, SNAP_ASKS) if checksum else 0
    return msg("snapshot", SNAP_BIDS, SNAP_ASKS, seq, -1, cs)


# ----- checksum -------------------------------------------------------------------------


def test_checksum_documented_examples():
    # OKX's worked examples: equal sides interleave; a short side's missing levels are skipped.
    bids = [["3366.1", "7", "0", "3"], ["3366", "6", "3", "4"]]
    asks = [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"]]
    assert checksum_string(["3366.1:7", "3366:6"], ["3366.8:9", "3368:8"]) == (
        "3366.1:7:3366.8:9:3366:6:3368:8"
    )
    assert level_checksum(bids, asks) == -1881014294
    short_bids = [["3366.1", "7", "0", "3"]]
    long_asks = [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"], ["3372", "8", "3", "4"]]
    assert checksum_string(["3366.1:7"], ["3366.8:9", "3368:8", "3372:8"]) == (
        "3366.1:7:3366.8:9:3368:8:3372:8"
    )
    assert level_checksum(short_bids, long_asks) == 831078360


def test_checksum_uses_raw_strings_and_top_25():
    assert book_checksum(["64000.10:1"], ["64000.2:1"]) != book_checksum(
        ["64000.1:1"], ["64000.2:1"]
    )
    bids = [f"{100 - i}:1" for i in range(40)]
    asks = [f"{200 + i}:1" for i in range(30)]
    assert book_checksum(bids, asks) == book_checksum(bids[:25], asks[:25])


def test_book_checksum_matches_after_updates_with_raw_text():
    lb = OkxLocalBook(INST)
    assert lb.on_message(snapshot()) is LOADED
    # The update rewrites a price with a trailing zero: the checksum must use that text.
    book_bids = [("100.10", "6"), ("100.0", "3")]
    m = with_checksum("update", [("100.10", "6")], [], book_bids, SNAP_ASKS, 11, 10)
    assert lb.on_message(m) is APPLIED
    assert lb.book.bids() == [(100.1, 6.0), (100.0, 3.0)]


# ----- parser ---------------------------------------------------------------------------


def test_parse_books_levels_and_fields():
    raw = (
        b'{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"update","data":[{'
        b'"asks":[["64000.2","0","0","0"]],"bids":[],"ts":"1750000000200","checksum":0,'
        b'"prevSeqId":880100,"seqId":880113}]}'
    )
    m = PARSER.parse(raw)
    assert (m.action, m.seq_id, m.prev_seq_id, m.checksum, m.ts) == (
        "update",
        880113,
        880100,
        0,
        1750000000200,
    )
    assert (m.ask_prices, m.ask_qtys, m.ask_text, m.bid_prices) == (
        [64000.2],
        [0.0],
        ["64000.2:0"],
        [],
    )


def test_parse_top_trades_events_pong():
    bbo = PARSER.parse(
        b'{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["64000.2","35","0","4"]],'
        b'"bids":[["64000.1","12","0","2"]],"ts":"1750000000100","seqId":880100}]}'
    )
    assert bbo == TopOfBook(
        "BTC-USDT", "bbo-tbt", 1750000000100, 880100, 64000.1, 12.0, 64000.2, 35.0
    )
    trades = PARSER.parse(
        b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
        b'"tradeId":"5512003","px":"64000.1","sz":"0.02","side":"sell","ts":"1750000000250",'
        b'"count":"2","source":"0","seqId":880120}]}'
    )
    (t,) = trades.items
    assert (t.trade_id, t.first_trade_id, t.side, t.qty, t.count, t.seq_id) == (
        5512003,
        5512002,
        "sell",
        0.02,
        2,
        880120,
    )
    ack = PARSER.parse(
        b'{"id":"s1","event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT-SWAP"},'
        b'"connId":"9f2c1a0b"}'
    )
    assert ack == Subscribed("subscribe", "books", "BTC-USDT-SWAP", "s1", "9f2c1a0b")
    err = PARSER.parse(
        b'{"id":"s1","event":"error","code":"60012","msg":"Invalid request","connId":"x"}'
    )
    assert err == ErrorEvent("60012", "Invalid request", "s1", "x")
    notice = PARSER.parse(b'{"event":"notice","code":"64008","msg":"upgrade","connId":"x"}')
    assert notice == Notice("64008", "upgrade", "x")
    assert PARSER.parse(b"pong") is PONG
    assert "64001" in describe_error("64001") and "/business" in describe_error("64001")


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b'{"arg":', "malformed_json"),
        (frame("update", [["NaN", "1", "0", "1"]], [], 2, 1), "bad_number"),
        (frame("update", [["-1", "1", "0", "1"]], [], 2, 1), "bad_number"),
        (frame("update", [["1e3", "1", "0", "1"]], [], 2, 1), "bad_number"),
        (frame("update", [["0", "1", "0", "1"]], [], 2, 1), "bad_number"),
        (frame("update", [[100.5, "1", "0", "1"]], [], 2, 1), "bad_type"),
        (frame("update", ["12"], [], 2, 1), "bad_type"),
        (frame("update", [], [], 2, None), "missing_field"),
        (
            b'{"arg":{"channel":"books","instId":"X"},"data":[{"bids":[],"asks":[],"ts":"1"}]}',
            "missing_field",
        ),
        (b'{"arg":{"channel":"tickers","instId":"X"},"data":[{}]}', "unknown_stream"),
        (b'{"event":"login"}', "unknown_event"),
        (b"[1,2]", "bad_type"),
    ],
)
def test_parse_refuses_bad_frames(raw, kind):
    with pytest.raises(FeedError) as info:
        PARSER.parse(raw)
    assert info.value.kind == kind


def test_parse_rest_books():
    body = (
        b'{"code":"0","msg":"","data":[{"asks":[["100.2","4","0","1"]],'
        b'"bids":[["100.1","5","0","2"]],"ts":"1750000000000","seqId":"42"}]}'
    )
    m = parse_rest_books(body, INST)
    assert (m.action, m.seq_id, m.checksum, m.bid_prices) == ("snapshot", 42, 0, [100.1])
    with pytest.raises(FeedError, match="51001"):
        parse_rest_books(b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}', INST)


# ----- sync machine: in-band snapshot ---------------------------------------------------


def test_snapshot_chain_keepalive_and_reset():
    lb = OkxLocalBook(INST)
    assert lb.on_message(msg("update", [("1", "1")], [], 9, 8)) is DROPPED  # before the snapshot
    assert lb.on_message(snapshot(10)) is LOADED and lb.synced
    assert lb.on_message(msg("update", [("100.1", "0")], [], 13, 10)) is APPLIED
    assert lb.book.best_bid() == (100.0, 3.0)
    assert lb.on_message(msg("update", [], [], 13, 13)) is UNCHANGED  # keep-alive
    assert lb.sync.seq_id == 13 and lb.synced
    # A sequence reset after maintenance: seqId < prevSeqId, valid because prevSeqId matches.
    assert lb.on_message(msg("update", [], [("100.2", "1")], 5, 13)) is APPLIED
    assert lb.on_message(msg("update", [], [("100.2", "2")], 6, 5)) is APPLIED
    assert lb.sync.resets == 1 and lb.sync.seq_id == 6 and lb.book.best_ask() == (100.2, 2.0)


def test_gap_unsyncs_until_a_new_snapshot_replaces_the_book():
    lb = OkxLocalBook(INST)
    lb.on_message(snapshot(10))
    assert lb.on_message(msg("update", [("99", "1")], [], 20, 15)) is RESYNC
    assert not lb.synced and lb.sync.gaps == 1 and lb.sync.resyncs == 1
    assert "prevSeqId=15" in lb.sync.reason
    assert lb.on_message(msg("update", [("99", "1")], [], 21, 20)) is DROPPED
    fresh = msg("snapshot", [("50", "1")], [("51", "2")], 30, -1)
    assert lb.on_message(fresh) is LOADED and lb.synced
    assert lb.book.bids() == [(50.0, 1.0)] and lb.book.asks() == [(51.0, 2.0)]
    # Any new snapshot replaces the book, even while synced.
    assert lb.on_message(snapshot(40)) is LOADED and lb.book.best_bid() == (100.1, 5.0)


def test_checksum_mismatch_resyncs():
    lb = OkxLocalBook(INST)
    lb.on_message(snapshot(10))
    good = with_checksum(
        "update", [("100.1", "6")], [], [("100.1", "6"), ("100.0", "3")], SNAP_ASKS, 11, 10
    )
    assert lb.on_message(good) is APPLIED and lb.checksums_checked == 2
    bad = msg("update", [("100.1", "7")], [], 12, 11, checksum=12345)
    assert lb.on_message(bad) is RESYNC
    assert (
        not lb.synced and lb.sync.checksum_failures == 1 and "checksum mismatch" in lb.sync.reason
    )
    assert lb.on_message(snapshot(13, checksum=False)) is LOADED  # a new snapshot rebuilds
    # A snapshot whose own checksum is wrong is not exact either.
    bad_snap = msg("snapshot", SNAP_BIDS, SNAP_ASKS, 14, -1, checksum=1)
    assert lb.on_message(bad_snap) is RESYNC and not lb.synced


def test_messages_without_seq_id_are_accepted_on_checksum_alone():
    lb = OkxLocalBook(INST)
    snap = msg("snapshot", SNAP_BIDS, SNAP_ASKS, None, None, level_checksum(SNAP_BIDS, SNAP_ASKS))
    assert lb.on_message(snap) is LOADED and lb.synced and lb.sync.seq_id is None
    book_bids = [("100.1", "2"), ("100.0", "3")]
    assert (
        lb.on_message(with_checksum("update", [("100.1", "2")], [], book_bids, SNAP_ASKS))
        is APPLIED
    )
    # After a seqId-less message the chain is unknown: the next is proven by its checksum too.
    book_asks = [("100.2", "1"), ("100.3", "7")]
    nxt = with_checksum("update", [], [("100.2", "1")], book_bids, book_asks, 50, 49)
    assert lb.on_message(nxt) is APPLIED and lb.sync.seq_id == 50
    # From there the chain holds again without checksums.
    assert lb.on_message(msg("update", [], [("100.3", "0")], 51, 50)) is APPLIED
    # No seqId and no checksum: nothing proves it.
    assert lb.on_message(msg("update", [("100.0", "9")], [])) is RESYNC
    assert lb.sync.unverifiable == 1 and not lb.synced
    # A wrong checksum on a seqId-less message is a mismatch like any other.
    lb.on_message(snap)
    assert lb.on_message(msg("update", [("100.1", "3")], [], checksum=99)) is RESYNC


# ----- REST start -----------------------------------------------------------------------


def rest(seq):
    return msg("snapshot", SNAP_BIDS, SNAP_ASKS, seq, None)


def test_rest_start_drops_old_and_applies_the_first_spanning_update():
    lb = OkxLocalBook(INST, start=START_REST)
    for m in (
        msg("update", [("99", "1")], [], 12, 10),
        msg("update", [("98", "1")], [], 15, 12),
        msg("update", [("97", "1")], [], 19, 15),
    ):
        assert lb.on_message(m) is BUFFERED
    assert lb.sync.needs_rest
    applied = []
    # snapSeq 13: drop seqId 12 (<= 13); first applied 15 has prevSeqId 12 <= 13 < 15.
    assert lb.on_rest_snapshot(rest(13), applied.append) is SnapshotStatus.SYNCED
    assert [m.seq_id for m in applied] == [15, 19] and lb.synced and lb.sync.seq_id == 19
    assert 99.0 not in dict(lb.book.bids()) and dict(lb.book.bids())[97.0] == 1.0
    assert lb.on_message(msg("update", [], [], 19, 19)) is UNCHANGED


def test_rest_snapshot_too_old_or_gapped_is_refetched():
    lb = OkxLocalBook(INST, start=START_REST)
    lb.on_message(msg("update", [("99", "1")], [], 12, 10))
    lb.on_message(msg("update", [("98", "1")], [], 15, 12))
    assert lb.on_rest_snapshot(rest(9)) is SnapshotStatus.TOO_OLD and not lb.synced
    assert lb.sync.buffered == 2
    lb.on_message(msg("update", [("97", "1")], [], 30, 20))  # a hole in the buffer
    assert lb.on_rest_snapshot(rest(13)) is SnapshotStatus.GAP
    assert "prevSeqId=20" in lb.sync.reason and lb.sync.buffered == 1
    assert lb.on_rest_snapshot(rest(25)) is SnapshotStatus.SYNCED and lb.sync.seq_id == 30


def test_rest_snapshot_alone_then_first_update_rule():
    lb = OkxLocalBook(INST, start=START_REST)
    lb.on_message(msg("update", [("99", "1")], [], 12, 10))
    published = []
    assert lb.on_rest_snapshot(rest(20), published.append) is SnapshotStatus.SYNCED
    assert [m.seq_id for m in published] == [20] and lb.synced
    assert lb.on_message(msg("update", [("96", "1")], [], 20, 18)) is DROPPED  # seqId <= snapSeq
    assert lb.on_message(msg("update", [("95", "1")], [], 24, 18)) is APPLIED  # 18 <= 20 < 24
    assert lb.on_message(msg("update", [("94", "1")], [], 30, 25)) is RESYNC
    assert lb.sync.buffered == 1 and lb.sync.needs_rest  # the breaking update opens the buffer
    assert lb.on_rest_snapshot(rest(20)) is SnapshotStatus.TOO_OLD


def test_rest_mode_still_takes_an_in_band_snapshot():
    lb = OkxLocalBook(INST, start=START_REST)
    lb.on_message(msg("update", [("99", "1")], [], 12, 10))
    assert lb.on_message(snapshot(40)) is LOADED and lb.synced and lb.sync.buffered == 0
    assert lb.on_rest_snapshot(rest(41)) is SnapshotStatus.UNNEEDED


def test_rest_buffer_overflow_resyncs():
    lb = OkxLocalBook(INST, start=START_REST, max_buffer=3)
    for i in range(3):
        assert lb.on_message(msg("update", [], [], 10 + i, 9 + i)) is BUFFERED
    assert lb.on_message(msg("update", [], [], 13, 12)) is RESYNC
    assert lb.sync.overflows == 1 and lb.sync.buffered == 1


# ----- rollover (make-before-break) -----------------------------------------------------


def test_overlap_drops_duplicates_and_the_new_socket_ahead():
    lb = OkxLocalBook(INST)
    lb.on_message(snapshot(10))
    u11 = msg("update", [("100.1", "1")], [], 11, 10)
    u12 = msg("update", [("100.1", "2")], [], 12, 11)
    u13 = msg("update", [("100.1", "3")], [], 13, 12)
    assert lb.on_overlap(u11, new_socket=False) is APPLIED
    # The new socket's snapshot is of a state the book holds or will reach: dropped.
    assert lb.on_overlap(msg("snapshot", SNAP_BIDS, SNAP_ASKS, 12, -1), new_socket=True) is DROPPED
    assert lb.on_overlap(u13, new_socket=True) is DROPPED  # ahead: the old socket brings 12
    assert lb.on_overlap(u12, new_socket=False) is APPLIED
    assert lb.on_overlap(u12, new_socket=True) is DROPPED  # duplicate
    assert lb.on_overlap(u13, new_socket=False) is APPLIED
    assert lb.on_overlap(u13, new_socket=True) is DROPPED
    u14 = msg("update", [("100.1", "4")], [], 14, 13)
    assert lb.on_overlap(u14, new_socket=True) is APPLIED  # the new socket continues the book
    assert lb.on_overlap(u14, new_socket=False) is DROPPED
    assert lb.book.best_bid() == (100.1, 4.0) and lb.synced and lb.sync.gaps == 0
    # The old socket's real gap still resyncs.
    assert lb.on_overlap(msg("update", [], [], 40, 30), new_socket=False) is RESYNC


def test_overlap_new_socket_snapshot_rebuilds_an_unsynced_book():
    lb = OkxLocalBook(INST)
    assert lb.on_overlap(snapshot(10), new_socket=True) is LOADED and lb.synced


# ----- connection plan, symbols, pacing -------------------------------------------------


def test_instruments_and_exchange_names():
    assert instrument("BTC-USDT-SWAP", "swap") == Instrument("BTC", "USDT", "perp")
    assert instrument("ETH-USDC", "spot") == Instrument("ETH", "USDC", "spot")
    for bad, market in (("BTCUSDT", "swap"), ("BTC-USDT", "swap"), ("BTC-USDT-SWAP", "spot")):
        with pytest.raises(ValueError, match="must look like"):
            instrument(bad, market)
    assert (exchange_name("swap"), exchange_name("spot")) == ("okx-swap", "okx-spot")


def test_plan_respects_book_and_message_limits():
    ids = [f"C{i}-USDT-SWAP" for i in range(70)]
    conns = plan_connections("swap", ids, ws_base="ws://127.0.0.1:9")
    assert [len(c.inst_ids) for c in conns] == [29, 29, 12]
    assert conns[0].url == "ws://127.0.0.1:9/ws/v5/public"
    assert conns[0].args[:3] == (
        Arg("bbo-tbt", "C0-USDT-SWAP"),
        Arg("books", "C0-USDT-SWAP"),
        Arg("trades", "C0-USDT-SWAP"),
    )
    (sub,) = conns[0].subscribe_messages()
    body = orjson.loads(sub)
    assert body["op"] == "subscribe" and len(body["args"]) == 87 and body["id"] == "s1"
    many = [Arg("trades", f"COIN{i}-USDT") for i in range(3000)]
    messages = op_messages("subscribe", many)
    assert len(messages) > 1 and all(len(m) <= MAX_SUBSCRIBE_BYTES for m in messages)
    assert sum(len(orjson.loads(m)["args"]) for m in messages) == 3000
    with pytest.raises(ValueError, match="must look like"):
        plan_connections("spot", ["BTC-USDT-SWAP"])
    assert books_url("BTC-USDT", rest_base="http://h:1/") == (
        "http://h:1/api/v5/market/books?instId=BTC-USDT&sz=400"
    )
    with pytest.raises(ValueError, match="sz"):
        books_url("BTC-USDT", 401)


def test_connect_pacer_and_subscribe_budget():
    pacer = ConnectPacer()
    assert [pacer.reserve(100.0) for _ in range(7)] == [
        100.0,
        100.0,
        100.0,
        101.0,
        101.0,
        101.0,
        102.0,
    ]
    budget = SubscribeBudget()
    budget.spend(0.0, 470)
    assert budget.available(10.0) == 10
    with pytest.raises(ValueError):
        budget.spend(10.0, 11)
    assert budget.available(3600.0) == 480


def test_resync_pacer_batches_and_backs_off():
    pacer = ResyncPacer(initial=1.0, maximum=8.0)
    assert pacer.request("A", 0.0) == 0.0 and pacer.request("B", 0.0) == 0.0
    assert pacer.request("A", 0.0) == 0.0  # already scheduled: no second resubscribe
    assert sorted(pacer.due(0.0)) == ["A", "B"]
    assert pacer.request("A", 1.0) == 2.0  # the second gap waits 1 s, then 2, 4, 8, 8
    assert pacer.due(1.5) == [] and pacer.due(2.0) == ["A"]
    assert pacer.request("A", 10.0) == 12.0
    assert pacer.due(12.0) == ["A"]
    pacer.synced("A")
    assert pacer.request("A", 50.0) == 50.0


def test_keepalive_pings_then_declares_dead():
    ka = Keepalive(ping_after=20.0, pong_timeout=5.0)
    ka.start(0.0)
    assert ka.poll(19.0) is None
    assert ka.poll(20.0) == Keepalive.PING
    assert ka.poll(24.0) is None
    ka.on_frame(24.5)  # pong
    assert ka.poll(30.0) is None and ka.poll(44.5) == Keepalive.PING
    assert ka.poll(49.6) == Keepalive.DEAD
