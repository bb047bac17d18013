"""Candle rules on a real candle ring: intervals, closing, late trades, restarts, shutdown."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from mdpipe.candles import CandleBuilder, parse_interval, ring_name
from mdpipe.readers import attach
from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter

S = 1_000_000_000


@pytest.fixture
def ring(instance: str) -> Iterator[RingWriter]:
    w = RingWriter.create(instance, "candles_1s.t.0", "candle", symbols=["A", "B"], capacity=64)
    yield w
    w.close(unlink=True)


def published(instance: str) -> np.ndarray:
    with attach(instance, "candles_1s.t.0", kind="candle") as r:
        r.seek_oldest()
        return r.read_batch(64)


def trade(b: CandleBuilder, t: float, px: float, qty: float = 1.0, tid: int = 0, sid: int = 0):
    b.on_trade(sid, int(t * S), 0, tid, tid, tid, px, qty, True)


def test_intervals_close_on_the_next_trade_or_the_clock_and_empty_ones_send_nothing(
    instance: str, ring: RingWriter
) -> None:
    b = CandleBuilder(ring, S, 2, start_ns=0, grace_ns=S // 2)
    trade(b, 100.0, 10.0, 2.0, 1)
    trade(b, 100.4, 12.0, 1.0, 2)
    trade(b, 100.999, 9.0, 1.0, 3)
    assert not len(published(instance))  # still open
    trade(b, 103.2, 11.0, 1.0, 4)  # closes 100 s; 101 and 102 had no trade: nothing sent
    got = published(instance)
    assert len(got) == 1
    c = got[0]
    assert (c["open_ts_ns"], c["interval_ns"]) == (100 * S, S)
    assert (c["open"], c["high"], c["low"], c["close"]) == (10.0, 12.0, 9.0, 9.0)
    assert c["volume"] == 4.0 and math.isclose(c["quote_volume"], 20 + 12 + 9)
    assert (c["trades"], c["first_trade_id"], c["last_trade_id"], c["flags"]) == (3, 1, 3, 0)
    b.on_clock(int(104.4 * S))  # 103 s ended 0.4 s ago: within the grace
    assert len(published(instance)) == 1
    b.on_clock(int(104.5 * S))
    assert published(instance)[-1]["open_ts_ns"] == 103 * S


def test_a_late_trade_amends_the_last_candle_and_older_ones_are_dropped(
    instance: str, ring: RingWriter
) -> None:
    b = CandleBuilder(ring, S, 2, start_ns=0, grace_ns=0)
    trade(b, 10.1, 5.0, tid=1)
    trade(b, 11.1, 6.0, tid=2)  # closes 10 s
    trade(b, 12.1, 7.0, tid=3)  # closes 11 s
    trade(b, 11.9, 8.0, 2.0, tid=4)  # late for 11 s, the last published: amended
    trade(b, 10.5, 1.0, tid=5)  # late for 10 s: no longer amendable
    got = published(instance)
    assert [(int(c["open_ts_ns"]) // S, int(c["revision"])) for c in got] == [
        (10, 0),
        (11, 0),
        (11, 1),
    ]
    amended = got[-1]
    assert amended["flags"] & L.FLAG_CANDLE_AMENDED
    assert (amended["high"], amended["close"], amended["volume"], amended["trades"]) == (
        8.0,
        6.0,  # the close stays the last trade in time order
        3.0,
        2,
    )
    assert (b.amended, b.late_dropped) == (1, 1)


def test_a_writer_restart_inside_an_interval_is_flagged_and_shutdown_sends_open_candles(
    instance: str, ring: RingWriter
) -> None:
    b = CandleBuilder(ring, S, 2, start_ns=int(20.5 * S), grace_ns=0)
    trade(b, 20.7, 3.0, tid=1)  # this interval began before the writer: trades may be missing
    trade(b, 21.2, 4.0, tid=2, sid=1)  # another symbol, a whole interval after the start
    trade(b, 21.3, 4.0, tid=3)
    b.flush_open()
    got = {
        (int(c["symbol_id"]), int(c["open_ts_ns"]) // S): int(c["flags"])
        for c in published(instance)
    }
    assert got == {
        (0, 20): L.FLAG_CANDLE_RESTART,
        (1, 21): L.FLAG_CANDLE_OPEN,
        (0, 21): L.FLAG_CANDLE_OPEN,
    }


@pytest.mark.parametrize(
    ("text", "ns"), [("1s", S), ("5s", 5 * S), ("1m", 60 * S), ("15m", 900 * S), ("1h", 3600 * S)]
)
def test_intervals(text: str, ns: int) -> None:
    assert parse_interval(text) == ns
    assert ring_name(text, "usdm", 0) == f"candles_{text}.usdm.0"


@pytest.mark.parametrize("text", ["0s", "1d", "7s", "m", "", "1.5m"])
def test_bad_intervals_are_one_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="candle interval"):
        parse_interval(text)
