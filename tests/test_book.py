"""OrderBook, C and Python: level operations, top-N in place, agreement with a reference book."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mdpipe import book as book_module
from mdpipe.book import PyOrderBook

# Every test here runs on both books: the C one (mdpipe/_book.c) and PyOrderBook.
pytestmark = pytest.mark.usefixtures("hot_path")


def loaded(bids: dict[float, float], asks: dict[float, float], **kw: int) -> PyOrderBook:
    book = book_module.OrderBook(**kw)
    book.apply_snapshot(list(bids), list(bids.values()), list(asks), list(asks.values()))
    return book


def top(book: PyOrderBook, depth: int = 5) -> tuple[np.ndarray, np.ndarray, int, int]:
    bids, asks = np.full((depth, 2), -1.0), np.full((depth, 2), -1.0)
    nb, na = book.write_top(bids, asks)
    return bids, asks, nb, na


def test_empty_book() -> None:
    book = book_module.OrderBook()
    assert book.best_bid() is None and book.best_ask() is None
    assert (book.bid_count, book.ask_count) == (0, 0)
    assert not book.is_crossed()
    bids, asks, nb, na = top(book)
    assert (nb, na) == (0, 0)
    assert not bids.any() and not asks.any()


def test_snapshot_sets_levels_and_skips_zero_quantities() -> None:
    book = loaded({100.0: 1.0, 99.5: 2.0, 98.0: 0.0}, {100.5: 3.0, 101.0: 4.0})
    assert book.best_bid() == (100.0, 1.0)
    assert book.best_ask() == (100.5, 3.0)
    assert (book.bid_count, book.ask_count) == (2, 2)
    assert book.bids() == [(100.0, 1.0), (99.5, 2.0)]
    assert book.asks() == [(100.5, 3.0), (101.0, 4.0)]


def test_snapshot_replaces_previous_levels() -> None:
    book = loaded({100.0: 1.0}, {101.0: 1.0})
    book.apply_snapshot([90.0], [5.0], [91.0], [6.0])
    assert book.bids() == [(90.0, 5.0)] and book.asks() == [(91.0, 6.0)]


def test_diff_updates_adds_and_removes_levels() -> None:
    book = loaded({100.0: 1.0, 99.0: 2.0}, {101.0: 3.0, 102.0: 4.0})
    book.apply([100.0, 99.5, 99.0], [1.5, 7.0, 0.0], [101.0, 103.0], [0.0, 9.0])
    assert book.bids() == [(100.0, 1.5), (99.5, 7.0)]
    assert book.asks() == [(102.0, 4.0), (103.0, 9.0)]
    assert book.best_bid() == (100.0, 1.5) and book.best_ask() == (102.0, 4.0)


def test_removing_an_absent_level_is_a_no_op() -> None:
    book = loaded({100.0: 1.0}, {101.0: 1.0})
    book.apply([50.0, 100.5], [0.0, 0.0], [200.0], [0.0])
    assert book.bids() == [(100.0, 1.0)] and book.asks() == [(101.0, 1.0)]


def test_empty_diff_changes_nothing() -> None:
    book = loaded({100.0: 1.0}, {101.0: 1.0})
    book.apply([], [], [], [])
    assert book.bids() == [(100.0, 1.0)] and book.asks() == [(101.0, 1.0)]


def test_mismatched_price_and_quantity_lists_are_refused() -> None:
    book = loaded({100.0: 1.0}, {101.0: 1.0})
    with pytest.raises(ValueError):
        book.apply([100.0, 99.0], [1.0], [], [])


def test_write_top_orders_sides_and_zero_fills_in_place() -> None:
    book = loaded({100.0: 1.0, 99.0: 2.0, 101.0: 3.0}, {103.0: 4.0, 102.0: 5.0})
    bids, asks = np.full((4, 2), 7.0), np.full((4, 2), 7.0)
    bids_before, asks_before = bids, asks
    assert book.write_top(bids, asks) == (3, 2)
    assert bids is bids_before and asks is asks_before
    assert bids.tolist() == [[101.0, 3.0], [100.0, 1.0], [99.0, 2.0], [0.0, 0.0]]
    assert asks.tolist() == [[102.0, 5.0], [103.0, 4.0], [0.0, 0.0], [0.0, 0.0]]


def test_write_top_into_record_fields() -> None:
    """The ring's book record has bids/asks fields of shape (depth, 2); views are written."""
    record = np.zeros(
        1, dtype=[("last_update_id", "<u8"), ("bids", "<f8", (3, 2)), ("asks", "<f8", (3, 2))]
    )
    book = loaded({100.0: 1.0, 99.0: 2.0}, {101.0: 3.0})
    assert book.write_top(record["bids"][0], record["asks"][0]) == (2, 1)
    assert record["bids"][0].tolist() == [[100.0, 1.0], [99.0, 2.0], [0.0, 0.0]]
    assert record["asks"][0].tolist() == [[101.0, 3.0], [0.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("dtype", ["<f4", ">f8"])
def test_write_top_refuses_rows_that_are_not_little_endian_float64(dtype: str) -> None:
    book = loaded({100.0: 1.0}, {101.0: 3.0})
    with pytest.raises(TypeError, match="float64"):
        book.write_top(np.zeros((3, 2), dtype), np.zeros((3, 2), dtype))


def test_write_top_refuses_a_strided_view() -> None:
    book = loaded({100.0: 1.0}, {101.0: 3.0})
    wide = np.zeros((3, 4))
    with pytest.raises(TypeError, match="C-contiguous"):
        book.write_top(wide[:, :2], wide[:, 2:])
    assert not wide.any()


def test_crossed_book_is_detected() -> None:
    book = loaded({100.0: 1.0}, {101.0: 1.0})
    assert not book.is_crossed()
    book.apply([101.0], [1.0], [], [])
    assert book.is_crossed()
    book.apply([101.0], [0.0], [], [])
    assert not book.is_crossed()
    book.apply([], [], [99.0], [1.0])
    assert book.is_crossed()


def test_clear() -> None:
    book = loaded({100.0: 1.0}, {101.0: 1.0})
    book.clear()
    assert (book.bid_count, book.ask_count) == (0, 0)
    assert book.best_bid() is None and top(book)[2:] == (0, 0)
    book.apply([10.0], [1.0], [11.0], [1.0])
    assert book.best_bid() == (10.0, 1.0) and book.best_ask() == (11.0, 1.0)


def test_bad_window_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        book_module.OrderBook(window=4, min_depth=5)
    with pytest.raises(ValueError):
        book_module.OrderBook(window=4, min_depth=0)


def test_deeper_read_than_window_grows_it() -> None:
    bids = {100.0 - i: 1.0 + i for i in range(50)}
    asks = {101.0 + i: 2.0 + i for i in range(50)}
    book = loaded(bids, asks, window=4, min_depth=2)
    out_b, out_a, nb, na = top(book, depth=30)
    assert (nb, na) == (30, 30)
    assert out_b.tolist() == [[100.0 - i, 1.0 + i] for i in range(30)]
    assert out_a.tolist() == [[101.0 + i, 2.0 + i] for i in range(30)]
    # The deeper depth stays served after more diffs eat into the window.
    book.apply(
        [100.0 - i for i in range(10)], [0.0] * 10, [101.0 + i for i in range(10)], [0.0] * 10
    )
    out_b, out_a, nb, na = top(book, depth=30)
    assert out_b.tolist() == [[90.0 - i, 11.0 + i] for i in range(30)]
    assert out_a.tolist() == [[111.0 + i, 12.0 + i] for i in range(30)]


class ReferenceBook:
    """The obviously correct book: a dict per side, fully sorted on every read."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def apply(self, side: dict[float, float], prices: list[float], qtys: list[float]) -> None:
        for p, q in zip(prices, qtys, strict=True):
            if q:
                side[p] = q
            else:
                side.pop(p, None)

    def top(self, depth: int) -> tuple[list[list[float]], list[list[float]]]:
        bids = [[p, self.bids[p]] for p in sorted(self.bids, reverse=True)[:depth]]
        asks = [[p, self.asks[p]] for p in sorted(self.asks)[:depth]]
        return bids, asks


def random_diff(
    rng: random.Random, ref: ReferenceBook, mid: float, spread: int
) -> tuple[float, list[float], list[float], list[float], list[float]]:
    """A market-like diff: the mid drifts, the side it moves into is swept (levels removed),
    the other side fills in, and random levels near the touch change or vanish."""
    tick = 0.5
    new_mid = mid + tick * rng.choice((-9, -3, -1, 0, 0, 1, 3, 9))
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for p in ref.asks:
        if p <= new_mid:
            asks[p] = 0.0
    for p in ref.bids:
        if p >= new_mid:
            bids[p] = 0.0
    for _ in range(rng.randint(0, 30)):
        side, sign = (bids, -1) if rng.random() < 0.5 else (asks, 1)
        p = new_mid + sign * tick * int(rng.expovariate(1 / spread) + 1)
        side[p] = 0.0 if rng.random() < 0.45 else round(rng.uniform(0.001, 9), 3)
    return new_mid, list(bids), list(bids.values()), list(asks), list(asks.values())


@pytest.mark.parametrize(
    ("window", "min_depth", "levels", "spread"),
    [(4, 2, 40, 3), (16, 5, 400, 6), (16, 5, 400, 30), (128, 20, 3000, 40)],
)
def test_random_diffs_match_reference(
    window: int, min_depth: int, levels: int, spread: int
) -> None:
    """Sweeps drain the window (rebuilds), bursts of inserts overfill it (trims)."""
    rng = random.Random(window * 1000 + levels + spread)
    ref = ReferenceBook()
    mid = 10_000.0
    for i in range(1, levels + 1):
        ref.bids[mid - i * 0.5] = rng.uniform(0.1, 5)
        ref.asks[mid + i * 0.5] = rng.uniform(0.1, 5)
    book = loaded(ref.bids, ref.asks, window=window, min_depth=min_depth)
    depth = min_depth
    out_b, out_a = np.zeros((depth, 2)), np.zeros((depth, 2))
    for step in range(3000):
        mid, bp, bq, ap, aq = random_diff(rng, ref, mid, spread)
        ref.apply(ref.bids, bp, bq)
        ref.apply(ref.asks, ap, aq)
        book.apply(bp, bq, ap, aq)
        want_b, want_a = ref.top(depth)
        nb, na = book.write_top(out_b, out_a)
        assert (nb, na) == (len(want_b), len(want_a)), step
        assert out_b[:nb].tolist() == want_b, step
        assert out_a[:na].tolist() == want_a, step
        assert book.best_bid() == (tuple(want_b[0]) if want_b else None)
        assert book.best_ask() == (tuple(want_a[0]) if want_a else None)
        assert not book.is_crossed()
    assert (book.bid_count, book.ask_count) == (len(ref.bids), len(ref.asks))
    assert book.bids() == [tuple(x) for x in ref.top(10**9)[0]]
    assert book.asks() == [tuple(x) for x in ref.top(10**9)[1]]


def test_side_drained_past_the_window_is_rebuilt_from_deep_levels() -> None:
    bids = {1000.0 - i: float(i + 1) for i in range(1000)}
    asks = {1001.0 + i: float(i + 1) for i in range(1000)}
    book = loaded(bids, asks, window=8, min_depth=3)
    # Sweep 600 levels off each side in one diff, far past the window.
    book.apply(
        [1000.0 - i for i in range(600)], [0.0] * 600, [1001.0 + i for i in range(600)], [0.0] * 600
    )
    assert book.best_bid() == (400.0, 601.0)
    assert book.best_ask() == (1601.0, 601.0)
    out_b, out_a = np.zeros((3, 2)), np.zeros((3, 2))
    assert book.write_top(out_b, out_a) == (3, 3)
    assert out_b.tolist() == [[400.0, 601.0], [399.0, 602.0], [398.0, 603.0]]
    assert out_a.tolist() == [[1601.0, 601.0], [1602.0, 602.0], [1603.0, 603.0]]
