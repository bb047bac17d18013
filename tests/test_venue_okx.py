"""OKX v5 sans-IO protocol: parser, checksum, sync machine, REST start, rollover, plan, config.

Fed events and bytes, no sockets.
"""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from mdpipe.instrument import Instrument
from mdpipe.venues.base import (
    Ack,
    Action,
    Alive,
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    FetchSnapshot,
    SendFrames,
    ServerShutdown,
    SnapshotStatus,
)
from mdpipe.venues.errors import FeedError
from mdpipe.venues.local_book import LocalBook
from mdpipe.venues.okx.budget import SubscribeBudget
from mdpipe.venues.okx.checksum import book_checksum, checksum_string, level_checksum
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
from mdpipe.venues.okx.spec import check_feed, check_symbol
from mdpipe.venues.okx.sync import SNAPSHOT_PATIENCE, START_REST, OkxBookSync
from mdpipe.venues.okx.venue import OkxVenue

# Every test here runs on both hot paths: the C book and level readers, and pure Python.
pytestmark = pytest.mark.usefixtures("hot_path")

APPLY, BUFFERED, IGNORED, RESYNC = Action.APPLY, Action.BUFFERED, Action.IGNORED, Action.RESYNC
INST = "BTC-USDT-SWAP"
PARSER = OkxParser()


def frame(action, bids, asks, seq=None, prev=None, checksum=0, inst=INST, ts="1750000000100"):
    """A raw `books` push as OKX writes it (seqId/prevSeqId left out when None)."""
    d = {"asks": asks, "bids": bids, "ts": ts, "checksum": checksum}
    if prev is not None:
        d["prevSeqId"] = prev
    if seq is not None:
        d["seqId"] = seq
    return orjson.dumps(
        {"arg": {"channel": "books", "instId": inst}, "action": action, "data": [d]}
    )


def msg(action, bids=(), asks=(), seq=None, prev=None, checksum=0):
    """A parsed `books` message; levels as (px, sz) string pairs."""
    b = [[p, q, "0", "1"] for p, q in bids]
    a = [[p, q, "0", "1"] for p, q in asks]
    return PARSER.parse(frame(action, b, a, seq, prev, checksum))


def checked(action, bids, asks, book_bids, book_asks, seq=None, prev=None):
    """A message carrying the checksum of the book (best-first levels) it should lead to."""
    cs = level_checksum([list(x) for x in book_bids], [list(x) for x in book_asks])
    return msg(action, bids, asks, seq, prev, cs)


SNAP_BIDS = [("100.1", "5"), ("100", "3")]
SNAP_ASKS = [("100.2", "4"), ("100.3", "7")]


def snapshot(seq=10, checksum=True):
    cs = level_checksum(SNAP_BIDS, SNAP_ASKS) if checksum else 0
    return msg("snapshot", SNAP_BIDS, SNAP_ASKS, seq, -1, cs)


def local(start="snapshot", max_buffer=4096):
    return LocalBook(OkxBookSync(start, max_buffer), INST, min_depth=20)


def rest(seq):
    body = {
        "code": "0",
        "msg": "",
        "data": [
            {
                "asks": [[p, q, "0", "1"] for p, q in SNAP_ASKS],
                "bids": [[p, q, "0", "1"] for p, q in SNAP_BIDS],
                "ts": "1750000000000",
                "seqId": seq,
            }
        ],
    }
    return parse_rest_books(orjson.dumps(body))


# ----- checksum -------------------------------------------------------------------------


def test_checksum_documented_examples():
    # OKX's worked examples: equal sides interleave; a short side's missing levels are skipped.
    bids = [["3366.1", "7", "0", "3"], ["3366", "6", "3", "4"]]
    asks = [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"]]
    assert checksum_string(["3366.1:7", "3366:6"], ["3366.8:9", "3368:8"]) == (
        "3366.1:7:3366.8:9:3366:6:3368:8"
    )
    assert level_checksum(bids, asks) == -1881014294
    long_asks = [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"], ["3372", "8", "3", "4"]]
    assert checksum_string(["3366.1:7"], ["3366.8:9", "3368:8", "3372:8"]) == (
        "3366.1:7:3366.8:9:3368:8:3372:8"
    )
    assert level_checksum(bids[:1], long_asks) == 831078360


def test_checksum_uses_raw_strings_and_top_25():
    assert book_checksum(["64000.10:1"], ["64000.2:1"]) != book_checksum(
        ["64000.1:1"], ["64000.2:1"]
    )
    bids = [f"{100 - i}:1" for i in range(40)]
    asks = [f"{200 + i}:1" for i in range(30)]
    assert book_checksum(bids, asks) == book_checksum(bids[:25], asks[:25])


def test_book_checksum_follows_the_raw_text_of_updates():
    lb = local()
    assert lb.on_snapshot(snapshot()) is SnapshotStatus.EXACT
    # The update writes the price with a trailing zero: the checksum must use that text.
    m = checked("update", [("100.10", "6")], [], [("100.10", "6"), ("100", "3")], SNAP_ASKS, 11, 10)
    assert lb.on_diff(m) is APPLY and lb.synced
    assert lb.book.bids() == [(100.1, 6.0), (100.0, 3.0)]
    assert lb.sync.checksums_checked == 2


def test_checksum_over_more_than_25_levels_and_short_sides():
    bids = [(f"{1000 - i}", f"{i + 1}") for i in range(40)]
    asks = [(f"{1001 + i}.5", "2") for i in range(3)]
    lb = local()
    snap = msg("snapshot", bids, asks, 5, -1, level_checksum(bids, asks))
    assert lb.on_snapshot(snap) is SnapshotStatus.EXACT and lb.synced
    # Deleting the best bid brings level 26 into the checksum.
    after = bids[1:]
    m = checked("update", [("1000", "0")], [], after, asks, 6, 5)
    assert lb.on_diff(m) is APPLY and lb.synced


# ----- parser ---------------------------------------------------------------------------


def test_parse_books_update_and_snapshot():
    raw = (
        b'{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"update","data":[{'
        b'"asks":[["64000.2","0","0","0"]],"bids":[],"ts":"1750000000200","checksum":0,'
        b'"prevSeqId":880100,"seqId":880113}]}'
    )
    d = PARSER.parse(raw)
    assert isinstance(d, DepthDiff)
    assert (d.symbol, d.event_time, d.first_id, d.last_id, d.prev_id, d.check) == (
        INST,
        1750000000200,
        880113,
        880113,
        880100,
        None,
    )
    assert (d.ask_prices, d.ask_qtys, d.bid_prices) == ([64000.2], [0.0], [])
    s = snapshot(880100)
    assert isinstance(s, DepthSnapshot) and (s.symbol, s.last_update_id) == (INST, 880100)
    assert s.check.bid_text == ["100.1:5", "100:3"]
    legacy = msg("update", [("1", "2")], [], None, None, checksum=7)
    assert (legacy.last_id, legacy.prev_id, legacy.check.checksum) == (0, -1, 7)


def test_parse_top_trades_and_events():
    bbo = PARSER.parse(
        b'{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["64000.2","35",'
        b'"0","4"]],"bids":[["64000.1","12","0","2"]],"ts":"1750000000100","seqId":880100}]}'
    )
    assert bbo == BookTicker("BTC-USDT", 880100, 64000.1, 12.0, 64000.2, 35.0, 1750000000100, 0)
    t = PARSER.parse(
        b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
        b'"tradeId":"5512003","px":"64000.1","sz":"0.02","side":"sell","ts":"1750000000250",'
        b'"count":"2","source":"0","seqId":880120}]}'
    )
    assert (t.trade_id, t.first_trade_id, t.last_trade_id, t.buyer_is_maker, t.qty) == (
        5512003,
        5512002,
        5512003,
        True,
        0.02,
    )
    two = orjson.loads(
        b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
        b'"tradeId":"7","px":"1","sz":"1","side":"buy","ts":"1","count":"1"}]}'
    )
    two["data"].append({**two["data"][0], "tradeId": "9", "count": "2", "side": "sell"})
    both = PARSER.parse(orjson.dumps(two))
    assert [(x.first_trade_id, x.last_trade_id, x.buyer_is_maker) for x in both.trades] == [
        (7, 7, False),
        (8, 9, True),
    ]
    ack = PARSER.parse(
        b'{"id":"s1","event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT-SWAP"},'
        b'"connId":"9f2c1a0b"}'
    )
    assert ack == Ack("s1", True, "", "subscribe")
    err = PARSER.parse(b'{"id":"s1","event":"error","code":"64003","msg":"tier","connId":"x"}')
    assert not err.ok and "64003" in err.message and "fee tier" in err.message
    assert PARSER.parse(b'{"event":"notice","code":"64008","msg":"upgrade","connId":"x"}') == (
        ServerShutdown(0)
    )
    assert isinstance(PARSER.parse(b"pong"), Alive)
    assert "/business" in describe_error("64001") and "60018" in describe_error("60018")


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
        (frame("bogus", [], [], 2, 1), "bad_type"),
        (
            b'{"arg":{"channel":"books","instId":"X"},"data":[{"bids":[],"asks":[],"ts":"1"}]}',
            "missing_field",
        ),
        (b'{"arg":{"channel":"price-limit","instId":"X"},"data":[{}]}', "unknown_stream"),
        (b'{"arg":{"channel":"tickers","instId":"X"},"data":[{}]}', "missing_field"),
        (
            b'{"arg":{"channel":"funding-rate","instId":"X"},"data":[{"ts":"1",'
            b'"fundingRate":"abc","fundingTime":"2"}]}',
            "bad_number",
        ),  # fmt: skip
        (b'{"arg":{"channel":"trades","instId":"X"},"data":[{},{}]}', "missing_field"),
        (b'{"event":"login"}', "unknown_event"),
        (b"[1,2]", "bad_type"),
    ],
)
def test_parse_refuses_bad_frames(raw, kind):
    with pytest.raises(FeedError) as info:
        PARSER.parse(raw)
    assert info.value.kind == kind


def test_parse_rest_books():
    s = rest("42")
    assert (s.symbol, s.last_update_id, s.check, s.bid_prices) == ("", 42, None, [100.1, 100.0])
    with pytest.raises(FeedError, match="51001"):
        parse_rest_books(b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}')


# ----- sync machine: in-band snapshot ---------------------------------------------------


def test_snapshot_chain_keepalive_and_sequence_reset():
    lb = local()
    assert lb.on_diff(msg("update", [("1", "1")], [], 9, 8)) is BUFFERED  # before the snapshot
    assert not lb.sync.needs_recovery  # the in-band snapshot comes by itself
    assert lb.on_snapshot(snapshot(10)) is SnapshotStatus.EXACT and lb.synced
    assert lb.sync.buffered == 0
    assert lb.on_diff(msg("update", [("100.1", "0")], [], 13, 10)) is APPLY
    assert lb.book.best_bid() == (100.0, 3.0)
    assert lb.on_diff(msg("update", [], [], 13, 13)) is IGNORED  # keep-alive
    assert lb.sync.keepalives == 1 and lb.sync.last_update_id == 13 and lb.synced
    # A sequence reset after maintenance: seqId < prevSeqId, valid because prevSeqId matches.
    assert lb.on_diff(msg("update", [], [("100.2", "1")], 5, 13)) is APPLY
    assert lb.on_diff(msg("update", [], [("100.2", "2")], 6, 5)) is APPLY
    assert lb.sync.resets == 1 and lb.sync.last_update_id == 6
    assert lb.book.best_ask() == (100.2, 2.0)


def test_gap_unsyncs_asks_for_a_resubscribe_and_a_new_snapshot_replaces_the_book():
    lb = local()
    lb.on_snapshot(snapshot(10))
    assert lb.on_diff(msg("update", [("99", "1")], [], 20, 15)) is RESYNC
    assert not lb.synced and lb.sync.gaps == 1 and lb.sync.resyncs == 1
    assert "prevSeqId=15" in lb.sync.reason and lb.sync.needs_recovery
    assert lb.on_diff(msg("update", [("99", "1")], [], 21, 20)) is BUFFERED
    fresh = msg("snapshot", [("50", "1")], [("51", "2")], 30, -1)
    assert lb.on_snapshot(fresh) is SnapshotStatus.EXACT and lb.synced
    assert lb.book.bids() == [(50.0, 1.0)] and lb.book.asks() == [(51.0, 2.0)]
    assert not lb.sync.needs_recovery
    # Any new snapshot replaces the book, even while synced.
    assert lb.on_snapshot(snapshot(40)) is SnapshotStatus.EXACT
    assert lb.book.best_bid() == (100.1, 5.0)


def test_no_snapshot_after_many_updates_asks_for_one():
    lb = local()
    for i in range(SNAPSHOT_PATIENCE):
        assert not lb.sync.needs_recovery
        lb.on_diff(msg("update", [], [("1", "1")], 10 + i, 9 + i))
    assert lb.sync.needs_recovery


def test_checksum_mismatch_resyncs():
    lb = local()
    lb.on_snapshot(snapshot(10))
    good = checked(
        "update", [("100.1", "6")], [], [("100.1", "6"), ("100", "3")], SNAP_ASKS, 11, 10
    )
    assert lb.on_diff(good) is APPLY
    assert lb.on_diff(msg("update", [("100.1", "7")], [], 12, 11, checksum=12345)) is RESYNC
    sync = lb.sync
    assert not lb.synced and sync.checksum_failures == 1 and "checksum mismatch" in sync.reason
    assert sync.needs_recovery and sync.resyncs == 1
    assert lb.on_snapshot(snapshot(13, checksum=False)) is SnapshotStatus.EXACT
    # A snapshot whose own checksum is wrong is not exact either.
    bad_snap = msg("snapshot", SNAP_BIDS, SNAP_ASKS, 14, -1, checksum=1)
    assert lb.on_snapshot(bad_snap) is SnapshotStatus.INVALID and not lb.synced


def test_messages_without_seq_id_are_accepted_on_their_checksum_alone():
    lb = local()
    snap = msg("snapshot", SNAP_BIDS, SNAP_ASKS, None, None, level_checksum(SNAP_BIDS, SNAP_ASKS))
    assert lb.on_snapshot(snap) is SnapshotStatus.EXACT and lb.synced
    book_bids = [("100.1", "2"), ("100", "3")]
    assert lb.on_diff(checked("update", [("100.1", "2")], [], book_bids, SNAP_ASKS)) is APPLY
    # After a seqId-less message the chain is unknown: the next is proven by its checksum too.
    book_asks = [("100.2", "1"), ("100.3", "7")]
    nxt = checked("update", [], [("100.2", "1")], book_bids, book_asks, 50, 49)
    assert lb.on_diff(nxt) is APPLY and lb.sync.last_update_id == 50
    # From there the chain holds again without checksums.
    assert lb.on_diff(msg("update", [], [("100.3", "0")], 51, 50)) is APPLY and lb.synced
    # No seqId and no checksum: nothing proves it.
    assert lb.on_diff(msg("update", [("100", "9")], [])) is RESYNC
    assert lb.sync.unverifiable == 1 and not lb.synced
    # A wrong checksum on a seqId-less message is a mismatch like any other.
    lb.on_snapshot(snap)
    assert lb.on_diff(msg("update", [("100.1", "3")], [], checksum=99)) is RESYNC


def test_checksum_after_levels_without_text_cannot_prove_a_seqless_message():
    lb = local()
    lb.on_snapshot(snapshot(10, checksum=False))  # current data: no checksum, no text kept
    m = checked("update", [("100.1", "2")], [], [("100.1", "2"), ("100", "3")], SNAP_ASKS)
    assert lb.on_diff(m) is RESYNC and lb.sync.unverifiable == 1


# ----- REST start -----------------------------------------------------------------------


def test_rest_start_drops_old_and_applies_the_first_spanning_update():
    lb = local(START_REST)
    for d in (
        msg("update", [("99", "1")], [], 12, 10),
        msg("update", [("98", "1")], [], 15, 12),
        msg("update", [("97", "1")], [], 19, 15),
    ):
        assert lb.on_diff(d) is BUFFERED
    assert lb.sync.needs_recovery
    applied = []
    # snapSeq 13: seqId 12 (<= 13) is dropped; 15 has prevSeqId 12 <= 13 < 15, then 19.
    assert lb.on_snapshot(rest(13), applied.append) is SnapshotStatus.SYNCED
    assert [d.last_id for d in applied] == [15, 19] and lb.synced
    assert lb.sync.last_update_id == 19 and not lb.sync.needs_recovery
    assert 99.0 not in dict(lb.book.bids()) and dict(lb.book.bids())[97.0] == 1.0
    assert lb.on_diff(msg("update", [], [], 19, 19)) is IGNORED


def test_rest_snapshot_too_old_or_gapped_is_refetched():
    lb = local(START_REST)
    lb.on_diff(msg("update", [("99", "1")], [], 12, 10))
    lb.on_diff(msg("update", [("98", "1")], [], 15, 12))
    assert lb.on_snapshot(rest(9)) is SnapshotStatus.TOO_OLD and not lb.synced
    assert lb.sync.buffered == 2 and lb.sync.rejected_snapshots == 1
    lb.on_diff(msg("update", [("97", "1")], [], 30, 20))  # a hole in the buffer
    assert lb.on_snapshot(rest(13)) is SnapshotStatus.GAP
    assert "prevSeqId=20" in lb.sync.reason and lb.sync.buffered == 1
    assert lb.on_snapshot(rest(25)) is SnapshotStatus.SYNCED and lb.sync.last_update_id == 30


def test_rest_snapshot_alone_waits_for_the_update_spanning_it():
    lb = local(START_REST)
    lb.on_diff(msg("update", [("99", "1")], [], 12, 10))
    assert lb.on_snapshot(rest(20)) is SnapshotStatus.WAITING and not lb.synced
    assert not lb.sync.needs_snapshot and not lb.sync.needs_recovery
    assert lb.on_diff(msg("update", [("96", "1")], [], 20, 18)) is IGNORED  # seqId <= snapSeq
    assert lb.on_diff(msg("update", [("95", "1")], [], 24, 18)) is APPLY and lb.synced
    assert lb.on_diff(msg("update", [("94", "1")], [], 30, 25)) is RESYNC
    assert lb.sync.buffered == 1 and lb.sync.needs_recovery  # the breaking update is kept
    assert lb.on_snapshot(rest(20)) is SnapshotStatus.TOO_OLD
    lb.reset()
    lb.on_diff(msg("update", [("99", "1")], [], 12, 10))
    lb.on_snapshot(rest(20))
    assert lb.on_diff(msg("update", [("93", "1")], [], 40, 30)) is RESYNC  # 30 > 20


def test_rest_mode_takes_an_in_band_snapshot_and_overflow_resyncs():
    lb = local(START_REST)
    lb.on_diff(msg("update", [("99", "1")], [], 12, 10))
    assert lb.on_snapshot(snapshot(40)) is SnapshotStatus.EXACT and lb.sync.buffered == 0
    assert lb.on_snapshot(rest(41)) is SnapshotStatus.UNNEEDED
    small = local(START_REST, max_buffer=3)
    for i in range(3):
        assert small.on_diff(msg("update", [], [], 10 + i, 9 + i)) is BUFFERED
    assert small.on_diff(msg("update", [], [], 13, 12)) is RESYNC
    assert small.sync.overflows == 1 and small.sync.buffered == 1


# ----- rollover (make-before-break after the 64008 notice) ------------------------------


def route(old=False, new=False, successor_up=True):
    """A route's rollover state as the ingest keeps it (see base.RouteState)."""
    successor = SimpleNamespace(up=successor_up) if old else None
    return SimpleNamespace(
        successor=successor,
        retiring=object() if new else None,
        settle_until=0.0,
        caught_up=set(),
        delivered=set(),
    )


def test_overlap_drops_duplicates_and_the_new_socket_ahead():
    venue = OkxVenue("swap", [INST], ws_url="ws://h:1", rest_url="http://h:1")
    lb = local()
    lb.on_snapshot(snapshot(10))
    old, new = route(old=True), route(new=True)

    def feed(r, d):
        d2, duplicate = venue.overlap_diff(r, lb.sync, d)
        return (lb.on_diff(d2) if d2 is not None else None), duplicate

    u = {s: msg("update", [("100.1", str(s))], [], s, s - 1) for s in (11, 12, 13, 14)}
    assert feed(old, u[11]) == (APPLY, False)
    # The new socket's snapshot is of a state the book has been in: not loaded again.
    assert lb.on_snapshot(snapshot(11)) is SnapshotStatus.UNNEEDED
    assert feed(new, u[13]) == (None, False)  # ahead: the old socket brings 12 first
    assert feed(old, u[12]) == (APPLY, False)
    assert feed(new, u[12]) == (None, True)
    assert feed(old, u[13]) == (APPLY, False)
    assert feed(new, u[13]) == (None, True)
    assert feed(new, u[14]) == (APPLY, False)  # the new socket continues the book
    assert feed(old, u[14]) == (None, True)
    assert lb.book.best_bid() == (100.1, 14.0) and lb.synced and lb.sync.gaps == 0
    assert (INST, "depth") in new.caught_up and (INST, "depth") in old.delivered
    # Outside a rollover nothing is filtered; the old socket's real gap still resyncs.
    assert venue.overlap_diff(route(), lb.sync, u[11]) == (u[11], False)
    assert feed(old, msg("update", [], [], 40, 30)) == (RESYNC, False)


def test_overlap_new_snapshot_ahead_replaces_and_the_old_socket_behind_is_dropped():
    venue = OkxVenue("swap", [INST], ws_url="ws://h:1", rest_url="http://h:1")
    lb = local()
    lb.on_snapshot(snapshot(10))
    assert lb.on_snapshot(snapshot(12)) is SnapshotStatus.EXACT  # ahead of the book
    behind = msg("update", [("100.1", "1")], [], 11, 10)
    assert venue.overlap_diff(route(old=True), lb.sync, behind) == (None, True)


# ----- plan, venue, config --------------------------------------------------------------


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
    subs = [orjson.loads(m) for m in conns[0].subscribe_messages()]
    assert len(subs) == 29 and all(b["op"] == "subscribe" for b in subs)
    assert subs[0]["id"] == "s1x1" and [a["channel"] for a in subs[0]["args"]] == [
        "bbo-tbt",
        "books",
        "trades",
    ]
    assert len({b["id"] for b in subs}) == 29
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


def test_venue_routes_ping_and_recovery():
    clock = [0.0]
    venue = OkxVenue(
        "swap",
        [INST, "ETH-USDT-SWAP"],
        ws_url="ws://h:1",
        rest_url="http://h:2",
        clock=lambda: clock[0],
    )
    (plan,) = venue.plan()
    assert plan.url == "ws://h:1/ws/v5/public" and plan.ping == b"ping" and plan.ping_interval > 0
    assert plan.streams[(INST, "depth")] == "books:BTC-USDT-SWAP"
    subs = [orjson.loads(m) for m in plan.subscribe]
    assert [[a["channel"] for a in b["args"]] for b in subs] == [["books", "trades"]] * 2
    assert venue.exchange == "okx-swap" and venue.instrument(INST).kind == "perp"
    how = venue.recovery(INST)
    assert isinstance(how, SendFrames)
    ops = [orjson.loads(f) for f in how.frames]
    assert [o["op"] for o in ops] == ["unsubscribe", "subscribe"]
    assert ops[1]["args"] == [{"channel": "books", "instId": INST}]
    # 480 ops an hour per connection: two were the subscribes, each resubscribe costs two.
    for _ in range(238):
        assert isinstance(venue.recovery(INST), SendFrames)
    assert isinstance(venue.recovery(INST), FetchSnapshot) and venue.rest_fallbacks == 1
    clock[0] = 3601.0
    assert isinstance(venue.recovery(INST), SendFrames)
    rest_venue = OkxVenue(
        "swap", [INST], ws_url="ws://h:1", rest_url="http://h:2", book_start="rest"
    )
    assert rest_venue.recovery(INST) == FetchSnapshot(
        "http://h:2/api/v5/market/books?instId=BTC-USDT-SWAP&sz=400"
    )
    verdict = venue.rest_verdict(429, None, 0.5, 0, "")
    assert verdict.wait >= 2.0 and verdict.blocked


def test_subscribe_budget():
    budget = SubscribeBudget()
    assert budget.spend(0.0, 470)
    assert budget.available(10.0) == 10 and not budget.spend(10.0, 11)
    assert budget.available(3600.0) == 480


def test_config_checks_name_the_key():
    assert check_symbol("BTCUSDT") is not None and check_symbol("BTC-USDT-SWAP") is None
    feed = SimpleNamespace(
        market="swap",
        symbols=["BTC-USDT"],
        depth_stream="books",
        trade_stream="trades",
        snapshot_limit=400,
        book_start="snapshot",
    )
    assert check_feed(feed, 20)[0] == "symbols"
    feed.symbols = ["BTC-USDT-SWAP"]
    assert check_feed(feed, 20) is None
    feed.book_start = "later"
    assert check_feed(feed, 20)[0] == "book_start"
    feed.book_start, feed.snapshot_limit = "rest", 401
    assert check_feed(feed, 20)[0] == "snapshot_limit"


def test_overlap_trades_once_each_in_order():
    venue = OkxVenue("swap", [INST], ws_url="ws://h:1", rest_url="http://h:1")

    def trade(last, count):
        raw = orjson.dumps(
            {
                "arg": {"channel": "trades", "instId": INST},
                "data": [
                    {
                        "instId": INST,
                        "tradeId": str(last),
                        "px": "1",
                        "sz": "1",
                        "side": "buy",
                        "ts": "1",
                        "count": str(count),
                    }
                ],
            }
        )
        return PARSER.parse(raw)

    old, new = route(old=True), route(new=True)
    assert venue.overlap_trade(old, 100, trade(103, 3)) == (True, False)
    assert venue.overlap_trade(new, 103, trade(103, 3)) == (False, True)  # a duplicate
    assert venue.overlap_trade(new, 103, trade(110, 2)) == (False, False)  # ahead: 104.. missing
    assert venue.overlap_trade(new, 103, trade(105, 2)) == (True, False)  # starts at 104
    assert (INST, "trade") in new.caught_up and (INST, "trade") in old.delivered
    assert venue.overlap_trade(route(), 0, trade(1, 1)) == (True, False)


def test_fast_path_reads_books_exactly_like_the_general_path():
    from mdpipe.sim.venues._okx.record import book_frames
    from mdpipe.venues.okx.parser import plain_books

    snapshot, updates = book_frames(pushes=30, steps_per_push=10)
    hand = [
        frame("update", [["3366", "6", "0", "4"]], [], 2, 1),  # a price without a dot
        frame("update", [], [["64000.2", "0", "0", "0"]], 3, 2),  # one side empty
        frame("update", [], [], 3, 3),  # keep-alive
    ]
    for raw in [snapshot, *updates, *hand]:
        assert plain_books(raw) is not None
        fast, general = PARSER.parse(raw), PARSER.parse(raw.decode())  # str: general path
        assert fast == general and type(fast) is type(general)
    # Declined, then refused by the general path with the precise reason.
    odd = frame("update", [["01", "1", "0", "1"]], [], 2, 1)  # not JSON once unquoted
    assert plain_books(odd) is None and PARSER.parse(odd).bid_prices == [1.0]
    for bad in (["1e3", "1", "0", "1"], ["-1", "1", "0", "1"], ["1.2.3", "1", "0", "1"]):
        raw = frame("update", [bad], [], 2, 1)
        assert plain_books(raw) is None
        with pytest.raises(FeedError):
            PARSER.parse(raw)
    legacy = msg("update", [("1", "2")], [], 5, 4, checksum=7)
    assert legacy.check is not None  # with a checksum the levels' text is kept


def test_fast_path_keeps_the_level_text_for_checksums():
    from mdpipe.sim.venues._okx.record import book_frames

    snapshot, updates = book_frames(pushes=30, steps_per_push=10, legacy=True)
    hand = [
        frame("update", [["3366", "6", "0", "4"]], [], 2, 1, checksum=5),
        frame("update", [], [["64000.20", "1.50", "0", "2"]], 3, 2, checksum=5),
    ]
    for raw in [snapshot, *updates, *hand]:
        fast, general = PARSER.parse(raw), PARSER.parse(raw.decode())
        assert fast.check is not None and fast.check == general.check
    assert PARSER.parse(hand[1]).check.ask_text == ["64000.20:1.50"]


def test_checksum_reads_25_levels_even_from_a_narrow_window():
    """The book keeps a window of its best levels; the checksum's 25 must always be there."""
    bids = [(f"{1000 - i}", "1") for i in range(60)]
    asks = [(f"{1001 + i}", "1") for i in range(60)]
    lb = LocalBook(OkxBookSync(), INST, window=20, min_depth=20)
    assert lb.on_snapshot(msg("snapshot", bids, asks, 1, -1, level_checksum(bids, asks))) is (
        SnapshotStatus.EXACT
    )
    for k in range(30):  # eat the bids from the top: the window must refill to 25
        gone, bids = bids[0], bids[1:]
        m = checked("update", [(gone[0], "0")], [], bids, asks, 2 + k, 1 + k)
        assert lb.on_diff(m) is APPLY, lb.sync.reason
    assert lb.synced and lb.sync.checksum_failures == 0
