"""The C hot path against the pure-Python one: the same parsed levels, books and top-N rows
on every recorded tape and simulator frame, on random books, and the same errors."""

from __future__ import annotations

import gzip
import math
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mdpipe import hot_path
from mdpipe.book import PyOrderBook, c_order_book
from mdpipe.sim.venues._okx.record import book_frames
from mdpipe.sim.venues.bybit import synthetic_frames
from mdpipe.venues import levels
from mdpipe.venues.base import DepthDiff, DepthSnapshot
from mdpipe.venues.binance.sync import book_sync
from mdpipe.venues.binance.wire import FUTURES, SPOT, BinanceParser, parse_snapshot
from mdpipe.venues.bybit.sync import BybitBookSync
from mdpipe.venues.bybit.wire import BybitParser
from mdpipe.venues.errors import FeedError
from mdpipe.venues.levels import DIFF_IN_ENVELOPE
from mdpipe.venues.local_book import LocalBook
from mdpipe.venues.okx.checksum import CHECKSUM_LEVELS, book_checksum
from mdpipe.venues.okx.parser import OkxParser
from mdpipe.venues.okx.sync import OkxBookSync
from mdpipe.venues.tapes import FUTURES_TAPE, SPOT_TAPE, is_snapshot, load_tape, tape_path

DEPTH = 20
OKX_TAPE = Path(__file__).resolve().parents[1] / "data" / "tapes" / "okx_swap_legacy_synthetic.gz"
COrderBook = c_order_book()


def test_the_c_hot_path_is_built() -> None:
    """`make setup` builds it; without it every diff pays the Python path."""
    if os.environ.get("MDPIPE_BOOK", "").lower() == "python":
        assert hot_path.IMPLEMENTATION == hot_path.PYTHON
    else:
        assert hot_path.IMPLEMENTATION == hot_path.C


# --- whole feeds, both paths: every event, every book state -----------------------------------


def top_rows(book: Any) -> bytes:
    bids, asks = np.full((DEPTH, 2), -1.0), np.full((DEPTH, 2), -1.0)
    counts = book.write_top(bids, asks)
    return repr((counts, book.bid_count, book.ask_count, book.is_crossed())).encode() + (
        bids.tobytes() + asks.tobytes()
    )


def replay(
    path: str, frames: Iterable[bytes], parse: Any, new_sync: Any, by_symbol: bool
) -> list[Any]:
    """Every book event parsed from `frames` and every book state after it (one book per
    symbol when `by_symbol`, else one book: REST snapshots carry no symbol)."""
    out: list[Any] = []
    with hot_path.use(path):
        books: dict[str, LocalBook] = {}
        for raw in frames:
            ev = parse(raw)
            if not isinstance(ev, DepthDiff | DepthSnapshot):
                continue
            symbol = ev.symbol if by_symbol else ""
            if symbol not in books:
                books[symbol] = LocalBook(new_sync(), symbol)
            local = books[symbol]
            snapshot = isinstance(ev, DepthSnapshot)
            verdict = local.on_snapshot(ev) if snapshot else local.on_diff(ev)
            out.append((ev, verdict, local.synced, top_rows(local.book)))
        for symbol, local in sorted(books.items()):
            out.append((symbol, local.book.bids(), local.book.asks()))
    return out


def binance_frames(name: str, market: str) -> tuple[list[bytes], Any]:
    parser = BinanceParser(market)

    def parse(raw: bytes) -> Any:
        return parse_snapshot(raw) if is_snapshot(raw) else parser.parse(raw)

    return [raw for _, raw in load_tape(tape_path(name))], parse


def same_on_both_paths(
    frames: list[bytes], parse: Any, new_sync: Any, by_symbol: bool = True
) -> int:
    c = replay(hot_path.C, frames, parse, new_sync, by_symbol)
    py = replay(hot_path.PYTHON, frames, parse, new_sync, by_symbol)
    assert len(c) == len(py)
    for i, (a, b) in enumerate(zip(c, py, strict=True)):
        assert a == b, f"event {i} differs"
    return len(c)


@pytest.mark.parametrize(("name", "market"), [(FUTURES_TAPE, FUTURES), (SPOT_TAPE, SPOT)])
def test_binance_tapes_give_identical_books(name: str, market: str) -> None:
    frames, parse = binance_frames(name, market)
    assert same_on_both_paths(frames, parse, lambda: book_sync(market), by_symbol=False) > 3000


def test_bybit_simulator_frames_give_identical_books() -> None:
    frames = [raw for _, raw in synthetic_frames("BTCUSDT", 200, 600, 60)]
    parser = BybitParser("linear")
    assert same_on_both_paths(frames, parser.parse, BybitBookSync) > 500


@pytest.mark.parametrize("legacy", [False, True], ids=["checksum0", "legacy"])
def test_okx_simulator_frames_give_identical_books(legacy: bool) -> None:
    snapshot, after = book_frames("BTC-USDT-SWAP", 400, 40, legacy)
    assert same_on_both_paths([snapshot, *after], OkxParser().parse, OkxBookSync) > 400


def test_okx_legacy_tape_gives_identical_books() -> None:
    with gzip.open(OKX_TAPE, "rb") as f:
        frames = [line.rstrip(b"\n").partition(b" ")[2] for line in f if line.strip()]
    assert same_on_both_paths(frames, OkxParser().parse, OkxBookSync) > 700


# --- random books: every read agrees after every change ----------------------------------------


def random_levels(rng: random.Random, near: float, n: int, spread: int) -> tuple[list, list]:
    prices, qtys = [], []
    for _ in range(n):
        ticks = rng.choice((rng.randint(-3, 3), rng.randint(-spread, spread)))
        prices.append(round(near + ticks * 0.1, 1))
        qtys.append(0.0 if rng.random() < 0.35 else round(rng.uniform(0.001, 50), 3))
    return prices, qtys


def assert_same_reads(c: Any, py: PyOrderBook, rng: random.Random, full: bool) -> None:
    for depth in (DEPTH, rng.randint(1, 70)):
        rows = [np.full((depth, 2), 7.0) for _ in range(4)]
        assert c.write_top(rows[0], rows[1]) == py.write_top(rows[2], rows[3])
        assert rows[0].tobytes() == rows[2].tobytes() and rows[1].tobytes() == rows[3].tobytes()
        assert c.best_prices(depth) == py.best_prices(depth)
    assert c.best_bid() == py.best_bid() and c.best_ask() == py.best_ask()
    assert c.is_crossed() == py.is_crossed()
    assert (c.bid_count, c.ask_count) == (py.bid_count, py.ask_count)
    if full:
        assert c.bids() == py.bids() and c.asks() == py.asks()


@pytest.mark.parametrize("seed", range(4))
def test_random_books_agree(seed: int) -> None:
    """Inserts, updates and deletes near and far from the top, deletes of absent levels,
    repeated prices in one diff, crossing prices, deep books and snapshots resetting."""
    rng = random.Random(seed)
    window, min_depth = rng.choice([(4, 2), (16, 5), (128, 20)])
    c, py = COrderBook(window, min_depth), PyOrderBook(window, min_depth)
    mid = 1000.0
    for step in range(700):
        kind = rng.random()
        if kind < 0.03 or step == 0:
            n = rng.choice((0, 5, 300, 3000))
            bp, bq = random_levels(rng, mid - n * 0.05, n, n)
            ap, aq = random_levels(rng, mid + n * 0.05, n, n)
            c.apply_snapshot(bp, bq, ap, aq)
            py.apply_snapshot(bp, bq, ap, aq)
        else:
            mid += 0.1 * rng.randint(-5, 5)
            spread = rng.choice((5, 50, 2000))
            bp, bq = random_levels(rng, mid - 0.3, rng.randint(0, 60), spread)
            ap, aq = random_levels(rng, mid + 0.3, rng.randint(0, 60), spread)
            if bp and rng.random() < 0.2:
                bp.append(bp[0])  # the same price twice in one diff: the last one counts
                bq.append(0.0 if bq[0] else 1.5)
            c.apply(bp, bq, ap, aq)
            py.apply(bp, bq, ap, aq)
        if kind > 0.995:
            c.clear()
            py.clear()
        assert_same_reads(c, py, rng, full=step % 50 == 0)
    assert_same_reads(c, py, rng, full=True)


def test_c_book_refuses_bad_values_without_changing() -> None:
    book = COrderBook()
    book.apply_snapshot([100.0], [1.0], [101.0], [2.0])
    with pytest.raises(ValueError, match="NaN"):
        book.apply([99.0, math.nan], [1.0, 1.0], [], [])
    with pytest.raises(TypeError):
        book.apply([99.0, "x"], [1.0, 1.0], [], [])
    with pytest.raises(ValueError, match="2 prices but 1 quantities"):
        book.apply([99.0, 98.0], [1.0], [], [])
    assert book.bids() == [(100.0, 1.0)] and book.asks() == [(101.0, 2.0)]
    with pytest.raises(TypeError, match=r"shape \(depth, 2\)"):
        book.write_top(np.zeros((3, 3)), np.zeros((3, 3)))


# --- the level readers: the same doubles as float() --------------------------------------------


def decimal_texts(rng: random.Random) -> list[str]:
    texts = ["0.1", "0.3", "61800.20", "9007199254740993.0", "9007199254740992.5", "0.00000001"]
    texts += ["1" + "0" * 300 + ".5", "0." + "0" * 330 + "1", "123456789012345678901234.5678"]
    texts += ["17976931348623157" + "0" * 292 + ".0", "0." + "0" * 307 + "22250738585072011"]
    for _ in range(3000):
        whole = "0" if rng.random() < 0.3 else str(rng.randint(1, 10 ** rng.randint(1, 25)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30)))
        texts.append(f"{whole}.{frac}")
    return texts


def test_c_reader_gives_the_doubles_float_gives() -> None:
    texts = decimal_texts(random.Random(7))
    for i in range(0, len(texts), 50):
        chunk = texts[i : i + 50]
        pairs = ",".join(f'["{t}","{t}"]' for t in chunk)
        raw = b'{"data":{"b":[' + pairs.encode() + b'],"a":[]}}'
        found = levels.c_plain_levels_reader()(raw, DIFF_IN_ENVELOPE)
        want = [float(t) for t in chunk]
        if 0.0 in want:
            assert found is None  # a price of 0: the general path says so
            continue
        assert found is not None
        assert found.bid_prices == want and found.bid_qtys == want
        assert all(math.copysign(1, v) == 1 for v in found.bid_prices)


def test_c_reader_declines_a_number_too_large_for_a_float() -> None:
    raw = b'{"data":{"b":[["1' + b"0" * 400 + b'.5","1.0"]],"a":[]}}'
    assert levels.c_plain_levels_reader()(raw, DIFF_IN_ENVELOPE) is None
    assert levels.py_plain_levels(raw, DIFF_IN_ENVELOPE) is None


# --- malformed levels: the same error on both paths --------------------------------------------

BINANCE_DIFF = {
    "e": "depthUpdate",
    "E": 1,
    "T": 1,
    "s": "BTCUSDT",
    "U": 10,
    "u": 11,
    "pu": 9,
    "b": [["100.5", "1.0"]],
    "a": [["101.5", "2.0"]],
}
BAD_LEVELS = [
    [["-100.5", "1.0"]],
    [["100.5", "-1.0"]],
    [["0.0", "1.0"]],
    [["nan", "1.0"]],
    [["inf", "1.0"]],
    [["1e5", "1.0"]],
    [[100.5, "1.0"]],
    [["100.5"]],
    [["100.5", "1.0", "7"]],
    [["", "1.0"]],
    [["1.2.3", "1.0"]],
    [["100.5", None]],
    ["100.5"],
    {"100.5": "1.0"},
    [["1" + "0" * 400 + ".5", "1.0"]],
]


def feed_error(parse: Any, raw: bytes) -> tuple[str, str] | None:
    try:
        parse(raw)
    except FeedError as exc:
        return exc.kind, str(exc)
    return None


@pytest.mark.parametrize("bad", BAD_LEVELS, ids=range(len(BAD_LEVELS)))
def test_malformed_levels_fail_alike_on_both_paths(bad: Any) -> None:
    binance = orjson.dumps({"stream": "btcusdt@depth", "data": BINANCE_DIFF | {"a": bad}})
    bybit_msg = {
        "topic": "orderbook.200.BTCUSDT",
        "type": "delta",
        "ts": 1,
        "data": {"s": "BTCUSDT", "b": bad, "a": [], "u": 5, "seq": 7},
        "cts": 1,
    }
    okx_bad = (
        [lv + ["0", "1"] if type(lv) is list else lv for lv in bad] if type(bad) is list else bad
    )
    okx_msg = {
        "arg": {"channel": "books", "instId": "BTC-USDT-SWAP"},
        "action": "update",
        "data": [
            {"asks": okx_bad, "bids": [], "ts": "1", "checksum": 0, "seqId": 2, "prevSeqId": 1}
        ],
    }
    cases = [
        (BinanceParser(FUTURES).parse, binance),
        (BybitParser("linear").parse, orjson.dumps(bybit_msg)),
        (OkxParser().parse, orjson.dumps(okx_msg)),
    ]
    refused = 0
    for parse, raw in cases:
        errors = []
        for path in hot_path.PATHS:
            with hot_path.use(path):
                errors.append(feed_error(parse, raw))
        assert errors[0] == errors[1], raw
        refused += errors[0] is not None
    assert refused  # each is malformed for at least one venue's level format


# --- OKX's checksum over the C book -----------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_okx_checksum_from_level_texts_is_the_same_in_both_books(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        sides = []
        for sign in (-1, 1):
            n = rng.choice((0, 1, 10, 24, 25, 26, 60))
            prices = [round(1000 + sign * (1 + i) * 0.1, 1) for i in range(n)]
            qtys = [round(rng.uniform(0.001, 9), 3) for _ in range(n)]
            texts = [
                f"{p}:{q}" + "0" * rng.randint(0, 2) for p, q in zip(prices, qtys, strict=True)
            ]
            sides.append((prices, qtys, texts))
        (bp, bq, bt), (ap, aq, at) = sides
        c, py = COrderBook(), PyOrderBook()
        for book in (c, py):
            book.apply_snapshot(bp, bq, ap, aq)
            book.set_texts(bp, bt, ap, at)
        want = book_checksum(bt, at)  # best first already: bids descend, asks ascend
        assert c.text_checksum(CHECKSUM_LEVELS) == py.text_checksum(CHECKSUM_LEVELS) == want
        # An update: new texts for changed levels, removed levels lose theirs.
        if bp:
            for book in (c, py):
                book.apply([bp[0], bp[-1]], [0.0, 7.5], [], [])
                book.set_texts([bp[0], bp[-1]], ["gone", f"{bp[-1]}:7.5"], [], [])
            bt = (bt[1:-1] if len(bp) > 1 else []) + [f"{bp[-1]}:7.5"]
            assert c.text_checksum(CHECKSUM_LEVELS) == py.text_checksum(CHECKSUM_LEVELS)
            assert c.text_checksum(CHECKSUM_LEVELS) == book_checksum(bt, at)
    for book in (c, py):
        book.apply([], [], [5000.0], [1.0])  # a level without a text
        with pytest.raises(KeyError):
            book.text_checksum(10_000)
        book.clear()
        assert book.text_checksum(CHECKSUM_LEVELS) == book_checksum([], [])
