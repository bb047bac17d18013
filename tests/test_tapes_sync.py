"""Sync state machines, one symbol's LocalBook, and the ground truth of the recorded tapes.

The tapes hold the exchange's own best bid/ask (bookTicker) tagged with the book update id
`u`. Replaying them through parser -> sync machine -> book, every diff ending at `u` that
has a bookTicker with the same `u` must leave exactly that best bid and ask in the book.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mdpipe.venues.binance.sync import (
    Action,
    FuturesBookSync,
    SnapshotStatus,
    SpotBookSync,
    book_sync,
)
from mdpipe.venues.binance.wire import (
    BinanceParser,
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    parse_snapshot,
)
from mdpipe.venues.local_book import LocalBook
from mdpipe.venues.tapes import (
    FUTURES_TAPE,
    SPOT_TAPE,
    TAPES_DIR_ENV,
    is_snapshot,
    load_tape,
    read_tape,
    tape_path,
    tapes_dir,
)

# Every test here runs on both hot paths: the C book and level readers, and pure Python.
pytestmark = pytest.mark.usefixtures("hot_path")

APPLY, BUFFERED, IGNORED, RESYNC = Action.APPLY, Action.BUFFERED, Action.IGNORED, Action.RESYNC
SYNCED, WAITING, TOO_OLD, GAP, UNNEEDED = (
    SnapshotStatus.SYNCED,
    SnapshotStatus.WAITING,
    SnapshotStatus.TOO_OLD,
    SnapshotStatus.GAP,
    SnapshotStatus.UNNEEDED,
)


def diff(
    first: int, last: int, prev: int = -1, bids: dict | None = None, asks: dict | None = None
) -> DepthDiff:
    bids, asks = bids or {}, asks or {}
    return DepthDiff(
        "BTCUSDT",
        0,
        0,
        first,
        last,
        prev,
        list(bids),
        list(bids.values()),
        list(asks),
        list(asks.values()),
    )


def snapshot(
    last_update_id: int, bids: dict | None = None, asks: dict | None = None
) -> DepthSnapshot:
    bids, asks = bids or {}, asks or {}
    return DepthSnapshot(
        last_update_id, list(bids), list(bids.values()), list(asks), list(asks.values())
    )


def chain(*ranges: tuple[int, int]) -> list[DepthDiff]:
    """Futures diffs whose pu links each to the previous one's u."""
    out, prev = [], ranges[0][0] - 1
    for first, last in ranges:
        out.append(diff(first, last, prev))
        prev = last
    return out


# --- futures rules -----------------------------------------------------------------------------


def test_futures_buffers_until_a_snapshot() -> None:
    sync = FuturesBookSync()
    assert sync.needs_snapshot and not sync.synced and sync.last_update_id == -1
    for d in chain((10, 12), (13, 15)):
        assert sync.on_diff(d) is BUFFERED
    assert sync.buffered == 2 and sync.needs_snapshot and not sync.synced


def test_futures_snapshot_drops_old_diffs_and_applies_the_rest() -> None:
    sync = FuturesBookSync()
    diffs = chain((10, 12), (13, 15), (16, 20), (21, 22))
    for d in diffs:
        sync.on_diff(d)
    result = sync.on_snapshot(snapshot(17))
    assert result.status is SYNCED and result.diffs == diffs[2:]
    assert sync.synced and not sync.needs_snapshot and sync.buffered == 0
    assert sync.last_update_id == 22
    assert sync.on_diff(diff(23, 30, 22)) is APPLY and sync.last_update_id == 30


@pytest.mark.parametrize(("snapshot_id", "applied_from"), [(13, 1), (15, 1), (16, 2), (12, 0)])
def test_futures_first_diff_bounds_are_inclusive(snapshot_id: int, applied_from: int) -> None:
    """U <= lastUpdateId <= u at both ends; u < lastUpdateId is dropped."""
    sync = FuturesBookSync()
    diffs = chain((10, 12), (13, 15), (16, 20))
    for d in diffs:
        sync.on_diff(d)
    result = sync.on_snapshot(snapshot(snapshot_id))
    assert result.status is SYNCED and result.diffs == diffs[applied_from:]


def test_futures_snapshot_older_than_the_stream_is_too_old() -> None:
    sync = FuturesBookSync()
    diffs = chain((10, 12), (13, 15))
    for d in diffs:
        sync.on_diff(d)
    assert sync.on_snapshot(snapshot(9)) == (TOO_OLD, [])
    assert sync.needs_snapshot and sync.buffered == 2 and sync.rejected_snapshots == 1
    assert "snapshot 9" in sync.reason
    # The next, newer snapshot works with the same buffer.
    assert sync.on_snapshot(snapshot(14)) == (SYNCED, diffs[1:])


def test_futures_gap_inside_the_buffer_keeps_the_diffs_after_it() -> None:
    sync = FuturesBookSync()
    diffs = chain((10, 12), (13, 15)) + chain((20, 22), (23, 25))
    for d in diffs:
        sync.on_diff(d)
    assert sync.on_snapshot(snapshot(11)) == (GAP, [])
    assert sync.buffered == 2 and sync.needs_snapshot and "pu=" in sync.reason
    assert sync.on_snapshot(snapshot(21)) == (SYNCED, diffs[2:])


def test_futures_no_buffered_diff_spanning_the_snapshot_is_a_gap() -> None:
    sync = FuturesBookSync()
    for d in [diff(10, 12, 9), diff(20, 22, 19)]:
        sync.on_diff(d)
    assert sync.on_snapshot(snapshot(15)).status is GAP
    assert sync.buffered == 1


def test_futures_snapshot_before_any_newer_diff_waits_for_one() -> None:
    sync = FuturesBookSync()
    sync.on_diff(diff(10, 12, 9))
    assert sync.on_snapshot(snapshot(20)) == (WAITING, [])
    assert not sync.synced and not sync.needs_snapshot and sync.last_update_id == 20
    assert sync.on_diff(diff(13, 19, 12)) is IGNORED and not sync.synced
    assert sync.on_diff(diff(20, 25, 19)) is APPLY and sync.synced
    assert sync.on_diff(diff(26, 26, 25)) is APPLY and sync.last_update_id == 26


def test_futures_waiting_book_resyncs_when_the_next_diff_skips_past_it() -> None:
    sync = FuturesBookSync()
    assert sync.on_snapshot(snapshot(20)) == (WAITING, [])
    assert sync.on_diff(diff(22, 25, 21)) is RESYNC
    assert sync.needs_snapshot and not sync.synced and sync.buffered == 1 and sync.resyncs == 1


def test_futures_pu_mismatch_while_synced_is_a_gap() -> None:
    sync = FuturesBookSync()
    sync.on_diff(diff(10, 12, 9))
    sync.on_snapshot(snapshot(11))
    assert sync.on_diff(diff(13, 15, 12)) is APPLY
    assert sync.on_diff(diff(17, 18, 16)) is RESYNC
    assert not sync.synced and sync.needs_snapshot and sync.resyncs == 1
    assert "pu=16" in sync.reason and "15" in sync.reason
    # The diff that revealed the gap opens the new buffer.
    assert sync.buffered == 1
    assert sync.on_snapshot(snapshot(17)) == (SYNCED, [diff(17, 18, 16)])


def test_futures_replayed_diff_while_synced_is_a_gap_not_applied_twice() -> None:
    sync = FuturesBookSync()
    sync.on_diff(diff(10, 12, 9))
    sync.on_snapshot(snapshot(11))
    assert sync.on_diff(diff(13, 15, 12)) is APPLY
    assert sync.on_diff(diff(13, 15, 12)) is RESYNC


# --- spot rules --------------------------------------------------------------------------------


def test_spot_snapshot_must_reach_the_first_buffered_diff() -> None:
    sync = SpotBookSync()
    diffs = [diff(10, 12), diff(13, 15), diff(16, 20)]
    for d in diffs:
        assert sync.on_diff(d) is BUFFERED
    # lastUpdateId < first U: fetch again (even 9 = U - 1, as documented).
    assert sync.on_snapshot(snapshot(9)) == (TOO_OLD, [])
    assert sync.needs_snapshot and sync.buffered == 3
    assert sync.on_snapshot(snapshot(10)) == (SYNCED, diffs)
    assert sync.last_update_id == 20


@pytest.mark.parametrize(
    ("snapshot_id", "applied_from"), [(11, 0), (12, 1), (14, 1), (15, 2), (19, 2)]
)
def test_spot_drops_u_up_to_the_snapshot_and_checks_the_first(
    snapshot_id: int, applied_from: int
) -> None:
    """Drop u <= lastUpdateId; the first applied has U <= lastUpdateId + 1 <= u."""
    sync = SpotBookSync()
    diffs = [diff(10, 12), diff(13, 15), diff(16, 20)]
    for d in diffs:
        sync.on_diff(d)
    assert sync.on_snapshot(snapshot(snapshot_id)) == (SYNCED, diffs[applied_from:])


def test_spot_synced_rules() -> None:
    sync = SpotBookSync()
    sync.on_diff(diff(10, 12))
    assert sync.on_snapshot(snapshot(11)).status is SYNCED
    assert sync.last_update_id == 12
    assert sync.on_diff(diff(5, 11)) is IGNORED  # u < local id
    assert sync.on_diff(diff(12, 12)) is APPLY  # u == local id is applied (idempotent)
    assert sync.on_diff(diff(11, 14)) is APPLY  # overlaps, continues
    assert sync.on_diff(diff(15, 15)) is APPLY  # U == local + 1
    assert sync.ignored == 1 and sync.last_update_id == 15
    assert sync.on_diff(diff(17, 18)) is RESYNC  # U > local + 1: missed diffs
    assert not sync.synced and sync.needs_snapshot and sync.buffered == 1
    assert "U=17" in sync.reason


def test_spot_gap_inside_the_buffer() -> None:
    sync = SpotBookSync()
    diffs = [diff(10, 12), diff(13, 15), diff(20, 22), diff(23, 25)]
    for d in diffs:
        sync.on_diff(d)
    assert sync.on_snapshot(snapshot(11)) == (GAP, [])
    assert sync.buffered == 2
    assert sync.on_snapshot(snapshot(20)) == (SYNCED, diffs[2:])


def test_spot_buffer_skips_stale_diffs_after_the_first() -> None:
    sync = SpotBookSync()
    diffs = [diff(10, 14), diff(12, 13), diff(15, 16)]
    for d in diffs:
        sync.on_diff(d)
    assert sync.on_snapshot(snapshot(11)) == (SYNCED, [diffs[0], diffs[2]])


def test_spot_waiting_rules() -> None:
    sync = SpotBookSync()
    assert sync.on_snapshot(snapshot(20)) == (WAITING, [])
    assert sync.on_diff(diff(15, 20)) is IGNORED  # u <= lastUpdateId
    assert not sync.synced
    assert sync.on_diff(diff(21, 23)) is APPLY and sync.synced
    other = SpotBookSync()
    other.on_snapshot(snapshot(20))
    assert other.on_diff(diff(22, 23)) is RESYNC


# --- shared behaviour --------------------------------------------------------------------------


@pytest.mark.parametrize("market", ["futures", "spot"])
def test_buffer_overflow_resyncs_and_is_counted(market: str) -> None:
    sync = book_sync(market, max_buffer=3)
    diffs = chain((1, 1), (2, 2), (3, 3), (4, 4), (5, 5))
    assert [sync.on_diff(d) for d in diffs] == [BUFFERED, BUFFERED, BUFFERED, RESYNC, BUFFERED]
    assert sync.overflows == 1 and sync.resyncs == 1 and "overflow" in sync.reason
    assert sync.buffered == 2 and sync.needs_snapshot and not sync.synced
    # The kept diffs still sync against a snapshot that reaches them (spot drops u <= 4).
    assert sync.on_snapshot(snapshot(4)) == (
        SYNCED,
        diffs[3:] if market == "futures" else diffs[4:],
    )


@pytest.mark.parametrize("market", ["futures", "spot"])
def test_snapshot_when_not_needed_is_unneeded(market: str) -> None:
    sync = book_sync(market)
    sync.on_diff(diff(10, 12, 9))
    sync.on_snapshot(snapshot(11))
    assert sync.synced
    assert sync.on_snapshot(snapshot(30)) == (UNNEEDED, [])
    assert sync.synced and sync.last_update_id == 12
    waiting = book_sync(market)
    waiting.on_snapshot(snapshot(5))
    assert waiting.on_snapshot(snapshot(6)) == (UNNEEDED, [])


@pytest.mark.parametrize("market", ["futures", "spot"])
def test_reset_forgets_everything(market: str) -> None:
    sync = book_sync(market)
    sync.on_diff(diff(10, 12, 9))
    sync.on_snapshot(snapshot(11))
    sync.reset()
    assert sync.needs_snapshot and not sync.synced and sync.buffered == 0
    assert sync.last_update_id == -1
    assert sync.on_diff(diff(13, 14, 12)) is BUFFERED


def test_book_sync_factory_and_settings() -> None:
    assert isinstance(book_sync("futures"), FuturesBookSync)
    assert isinstance(book_sync("spot"), SpotBookSync)
    with pytest.raises(ValueError):
        book_sync("options")
    with pytest.raises(ValueError):
        FuturesBookSync(max_buffer=0)


# --- LocalBook: the sync machine in charge of a book -------------------------------------------


def test_local_book_loads_the_snapshot_then_the_buffered_diffs() -> None:
    local = LocalBook(book_sync("futures"), "BTCUSDT")
    d1 = diff(10, 12, 9, bids={100.0: 5.0}, asks={101.0: 1.0})
    d2 = diff(13, 15, 12, bids={100.0: 0.0, 99.0: 2.0}, asks={102.0: 3.0})
    assert local.on_diff(d1) is BUFFERED and local.on_diff(d2) is BUFFERED
    assert local.book.best_bid() is None
    seen: list[tuple[int, tuple | None]] = []
    status = local.on_snapshot(
        snapshot(11, bids={100.0: 1.0, 98.0: 1.0}, asks={101.0: 2.0}),
        lambda d: seen.append((d.last_id, local.book.best_bid())),
    )
    assert status is SYNCED and local.synced
    # The callback sees the book after each buffered diff in turn.
    assert seen == [(12, (100.0, 5.0)), (15, (99.0, 2.0))]
    assert local.book.asks() == [(101.0, 1.0), (102.0, 3.0)]
    assert local.on_diff(diff(16, 16, 15, asks={101.0: 0.0})) is APPLY
    assert local.book.best_ask() == (102.0, 3.0)


def test_local_book_refused_snapshot_leaves_the_book_alone() -> None:
    local = LocalBook(book_sync("spot"))
    local.on_diff(diff(10, 12, bids={1.0: 1.0}))
    assert local.on_snapshot(snapshot(5, bids={2.0: 2.0})) is TOO_OLD
    assert local.book.bid_count == 0 and not local.synced


def test_local_book_unapplied_diffs_do_not_touch_the_book() -> None:
    local = LocalBook(book_sync("futures"))
    local.on_diff(diff(10, 12, 9))
    local.on_snapshot(snapshot(11, bids={100.0: 1.0}, asks={101.0: 1.0}))
    assert local.on_diff(diff(20, 21, 19, bids={100.0: 0.0})) is RESYNC
    assert not local.synced and local.book.best_bid() == (100.0, 1.0)
    local.reset()
    assert local.book.bid_count == 0 and local.sync.needs_snapshot


def test_a_gap_resyncs_only_its_own_symbol() -> None:
    books = {s: LocalBook(book_sync("futures"), s) for s in ("BTCUSDT", "ETHUSDT")}
    for local in books.values():
        local.on_diff(diff(10, 12, 9, bids={100.0: 1.0}))
        assert local.on_snapshot(snapshot(11, asks={101.0: 1.0})) is SYNCED
    assert books["BTCUSDT"].on_diff(diff(20, 22, 19)) is RESYNC
    assert not books["BTCUSDT"].synced
    eth = books["ETHUSDT"]
    assert (
        eth.synced and eth.book.best_bid() == (100.0, 1.0) and eth.book.best_ask() == (101.0, 1.0)
    )
    assert eth.on_diff(diff(13, 14, 12, bids={100.5: 2.0})) is APPLY
    assert eth.book.best_bid() == (100.5, 2.0)


# --- tapes -------------------------------------------------------------------------------------


def test_tapes_are_found_and_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tape_path(FUTURES_TAPE)
    assert path.parent == tapes_dir()
    first = next(read_tape(path))
    assert first[0] > 1.7e18 and first[1].startswith(b'{"stream":')
    monkeypatch.setenv(TAPES_DIR_ENV, str(tmp_path))
    assert tapes_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=TAPES_DIR_ENV):
        tape_path(FUTURES_TAPE)


def test_bad_tape_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'1 {"a":1}\nnot-a-stamp {"a":1}\n')
    with pytest.raises(ValueError, match=":2:"):
        list(read_tape(path))


@dataclass
class Replay:
    """What a tape replay saw: the book's top after each applied diff, and the tickers."""

    tops: dict[int, tuple] = field(default_factory=dict)
    tickers: dict[int, tuple] = field(default_factory=dict)
    actions: dict[Action, int] = field(default_factory=dict)
    statuses: list[SnapshotStatus] = field(default_factory=list)
    crossed: int = 0

    def comparable(self) -> list[int]:
        return sorted(self.tops.keys() & self.tickers.keys())

    def disagreements(self) -> list[tuple[int, tuple, tuple]]:
        return [
            (u, self.tops[u], self.tickers[u])
            for u in self.comparable()
            if self.tops[u] != self.tickers[u]
        ]


def replay(lines: list[bytes], market: str) -> Replay:
    """Parser -> sync machine -> book, exactly as a live client; the snapshot where recorded."""
    parser = BinanceParser(market)
    local = LocalBook(book_sync(market), "BTCUSDT")
    book = local.book
    seen = Replay()

    def record(d: DepthDiff) -> None:
        seen.tops[d.last_id] = (book.best_bid(), book.best_ask())
        seen.crossed += book.is_crossed()

    for raw in lines:
        if is_snapshot(raw):
            seen.statuses.append(local.on_snapshot(parse_snapshot(raw), record))
            continue
        event = parser.parse(raw)
        if type(event) is DepthDiff:
            action = local.on_diff(event)
            seen.actions[action] = seen.actions.get(action, 0) + 1
            if action is APPLY:
                assert local.synced
                record(event)
        elif type(event) is BookTicker:
            seen.tickers[event.update_id] = (
                (event.bid_price, event.bid_qty),
                (event.ask_price, event.ask_qty),
            )
    return seen


TAPES = [(FUTURES_TAPE, "futures"), (SPOT_TAPE, "spot")]


@pytest.fixture(scope="module", params=TAPES, ids=["futures", "spot"])
def tape(request: pytest.FixtureRequest) -> tuple[list[bytes], str]:
    name, market = request.param
    return [raw for _, raw in load_tape(tape_path(name))], market


def test_tape_book_matches_every_exchange_book_ticker(tape: tuple[list[bytes], str]) -> None:
    lines, market = tape
    seen = replay(lines, market)
    pairs = seen.comparable()
    print(
        f"\n{market}: {len(pairs)} comparable (diff u == bookTicker u) pairs, "
        f"{len(seen.tops)} diffs applied, {len(seen.tickers)} bookTickers, actions {seen.actions}"
    )
    assert seen.statuses == [SYNCED]
    assert RESYNC not in seen.actions
    assert not seen.disagreements()
    assert len(pairs) >= 500
    assert seen.crossed == 0


def test_tape_snapshot_fetched_before_the_stream_still_syncs(tape: tuple[list[bytes], str]) -> None:
    """A snapshot newer than the first diffs delivered: they are stale, the next one joins."""
    lines, market = tape
    at = next(i for i, raw in enumerate(lines) if is_snapshot(raw))
    seen = replay([lines[at]] + lines[:at] + lines[at + 1 :], market)
    assert seen.statuses == [WAITING]
    assert seen.actions.get(IGNORED, 0) >= 1 and RESYNC not in seen.actions
    assert not seen.disagreements() and len(seen.comparable()) >= 500


def test_tape_with_a_lost_diff_resyncs_and_never_publishes_a_wrong_book(
    tape: tuple[list[bytes], str],
) -> None:
    lines, market = tape
    diffs = [i for i, raw in enumerate(lines) if b"depthUpdate" in raw]
    lost = diffs[len(diffs) // 2]
    seen = replay(lines[:lost] + lines[lost + 1 :], market)
    assert seen.actions[RESYNC] == 1
    # After the gap no diff is applied: no snapshot came, and nothing guessed is published.
    applied_after = [u for u in seen.tops if u > BinanceParser(market).parse(lines[lost]).last_id]
    assert applied_after == []
    assert not seen.disagreements()


def test_every_tape_line_parses(tape: tuple[list[bytes], str]) -> None:
    lines, market = tape
    parser = BinanceParser(market)
    kinds: dict[str, int] = {}
    for raw in lines:
        if is_snapshot(raw):
            assert parse_snapshot(raw).bid_prices
            continue
        name = type(parser.parse(raw)).__name__
        kinds[name] = kinds.get(name, 0) + 1
        parser.parse(raw.decode())
    assert set(kinds) == {"DepthDiff", "BookTicker", "Trade"}
