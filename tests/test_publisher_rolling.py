"""Rolling 24-hour statistics: window edges, late and early trades, exact sums, bounded memory."""

from __future__ import annotations

import math

import numpy as np

from mdpipe.publisher.rolling import MINUTE_NS, MINUTES, Rolling24h

T0 = 1_723_100_000 * 1_000_000_000 // MINUTE_NS * MINUTE_NS  # a minute boundary in 2024


def add(r: Rolling24h, ts: list[int], px: list[float], qty: list[float], now: int) -> None:
    r.add(np.array(ts, np.int64), np.array(px), np.array(qty), now)


def test_figures_of_a_known_sequence() -> None:
    r = Rolling24h()
    ts = [T0 + 1_000_000_000 * k for k in range(5)]
    add(r, ts, [100.0, 101.5, 99.25, 100.75, 100.5], [0.1, 0.2, 0.3, 0.4, 0.5], ts[-1])
    w = r.snapshot(ts[-1])
    assert w.trades == 5
    assert w.high == 101.5 and w.low == 99.25
    assert w.volume == math.fsum([0.1, 0.2, 0.3, 0.4, 0.5])


def test_empty_window() -> None:
    w = Rolling24h().snapshot(T0)
    assert (w.volume, w.high, w.low, w.trades) == (0.0, None, None, 0)


def test_trades_leave_the_window_after_24_hours() -> None:
    """The window is the current minute plus the 1440 whole minutes before it (Binance's rule)."""
    r = Rolling24h()
    add(r, [T0 + 30 * 10**9], [200.0], [1.0], T0 + 30 * 10**9)  # minute 0, the high
    add(r, [T0 + 3_600 * 10**9], [100.0], [2.0], T0 + 3_600 * 10**9)  # an hour later
    day = MINUTES * MINUTE_NS
    # 24 h and 59 s after minute 0 began: minute 0 is the oldest whole minute, still in.
    w = r.snapshot(T0 + day + 59 * 10**9)
    assert (w.trades, w.high, w.low, w.volume) == (2, 200.0, 100.0, 3.0)
    # One minute later it has fallen out; the hour-old one stays.
    w = r.snapshot(T0 + day + MINUTE_NS)
    assert (w.trades, w.high, w.low, w.volume) == (1, 100.0, 100.0, 2.0)
    w = r.snapshot(T0 + day + 3_600 * 10**9 + MINUTE_NS)
    assert (w.trades, w.high, w.low, w.volume) == (0, None, None, 0.0)


def test_a_trade_older_than_the_window_is_ignored_and_evicts_nothing() -> None:
    r = Rolling24h()
    now = T0 + 2 * MINUTES * MINUTE_NS
    add(r, [now], [50.0], [1.0], now)
    # Exactly 1441 minutes older: the same slot, which must not be reset by it.
    add(r, [now - (MINUTES + 1) * MINUTE_NS], [999.0], [5.0], now)
    w = r.snapshot(now)
    assert (w.trades, w.high, w.volume) == (1, 50.0, 1.0)


def test_a_late_trade_updates_a_closed_minute() -> None:
    r = Rolling24h()
    add(r, [T0 + 10 * MINUTE_NS], [10.0], [1.0], T0 + 10 * MINUTE_NS)
    assert r.snapshot(T0 + 11 * MINUTE_NS).trades == 1  # minute 10 is now closed and aggregated
    add(r, [T0 + 10 * MINUTE_NS + 59 * 10**9], [12.0], [0.5], T0 + 11 * MINUTE_NS)
    w = r.snapshot(T0 + 11 * MINUTE_NS)
    assert (w.trades, w.high, w.low, w.volume) == (2, 12.0, 10.0, 1.5)


def test_a_batch_spanning_minutes_and_clock_skew() -> None:
    r = Rolling24h()
    now = T0 + 5 * MINUTE_NS
    ts = [now - MINUTE_NS, now - 1, now, now + 10 * MINUTE_NS]  # the last is 10 min ahead
    add(r, ts, [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0], now)
    w = r.snapshot(now)
    assert (w.trades, w.high, w.low) == (4, 4.0, 1.0)
    # The skewed trade counted in the next minute only: it did not push the window ahead.
    w = r.snapshot(now + (MINUTES + 1) * MINUTE_NS)
    assert (w.trades, w.high, w.low) == (1, 4.0, 4.0)


def test_volume_stays_exact_over_days_of_trades() -> None:
    """No drift: the window sum equals fsum of the trades in it, after 3 days of minutes rolling."""
    r = Rolling24h()
    rng = np.random.default_rng(7)
    n_min = 3 * MINUTES
    per = 20
    qty = np.round(rng.uniform(0.001, 5.0, (n_min, per)), 3)
    px = np.round(rng.uniform(90.0, 110.0, (n_min, per)), 2)
    for m in range(n_min):
        ts = T0 + m * MINUTE_NS + np.arange(per, dtype=np.int64) * 1_000_000_000
        r.add(ts, px[m], qty[m], int(ts[-1]))
        if m % 97 == 0:
            r.snapshot(int(ts[-1]))
    now = T0 + (n_min - 1) * MINUTE_NS + 30 * 10**9
    w = r.snapshot(now)
    first = n_min - 1 - MINUTES
    expect = math.fsum(qty[first:].ravel().tolist())
    assert w.trades == (MINUTES + 1) * per
    assert abs(w.volume - expect) <= 2 * math.ulp(expect)
    assert w.high == px[first:].max() and w.low == px[first:].min()
    assert all(len(a) == MINUTES + 1 for a in (r._minute, r._vol, r._high))  # bounded memory
