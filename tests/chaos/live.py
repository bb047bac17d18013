"""A live instance under chaos: `mdpipe start` on the simulator, its ground truth, what it wrote.

Ground truth is the simulator's own bookTicker stream (test_ingest_support.TickerCollector):
a book record flagged SYNCED whose last update id equals a ticker's `u` must show exactly
that best bid and ask, in the ring and in Redis alike.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import posix_ipc
import redis
from test_ingest_support import (
    RecordLog,
    Ticker,
    TickerCollector,
    check_continuity,
    check_record_invariants,
    compare_with_tickers,
    synced_in_ring,
)
from test_supervisor import PY, REPO, ReaderProcess, Running

from mdpipe.shm.segment import LayoutError, read_status
from mdpipe.sim.process import SimProcess

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]  # config/demo.toml
BOOKS, TRADES = "books.sim.0", "trades.sim.0"


def wait(cond: Callable[[], object], timeout: float, what: str, step: float = 0.02) -> float:
    """Poll cond until true; the seconds it took (fails with `what` after timeout)."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout} s waiting for {what}"
        time.sleep(step)
    return time.monotonic() - t0


def counters(instance: str, ring: str) -> dict[str, int]:
    """A segment's named counters; {} while it does not exist."""
    with contextlib.suppress(posix_ipc.ExistentialError, LayoutError, OSError):
        return read_status(instance, ring).counters
    return {}


def cursor(instance: str, ring: str) -> int:
    """Records committed to a ring so far."""
    return read_status(instance, ring).write_cursor


class SimControl(SimProcess):
    """The simulator a running instance started: inject faults, read its stats."""

    def __init__(self, port: int) -> None:  # the process is the supervisor's, not ours
        self.host, self.port = "127.0.0.1", port


class RedisTap:
    """Every book and trade a Redis subscriber receives; resubscribes after an outage."""

    def __init__(self, url: str, password: str | None = None) -> None:
        self.client = redis.Redis.from_url(url, password=password, socket_timeout=10.0)
        self.books: list[tuple[str, int, bool, Ticker]] = []  # symbol, u, synced, top
        self.book_seqs: list[tuple[str, int]] = []  # symbol, per-symbol record number
        self.trades: list[tuple[str, int]] = []  # symbol, trade id
        self.subscribed = threading.Event()
        self.resubscribed = 0  # messages published meanwhile were missed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RedisTap:
        self._thread.start()
        assert self.subscribed.wait(10), "the Redis subscriber could not subscribe"
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ps = self.client.pubsub(ignore_subscribe_messages=True)
                ps.psubscribe("orderbook:*", "trades:*")
                self.resubscribed += self.subscribed.is_set()
                self.subscribed.set()
                while not self._stop.is_set():
                    msg = ps.get_message(timeout=0.2)
                    if msg is not None:
                        self._take(msg["channel"], msg["data"])
            except (redis.RedisError, OSError):
                time.sleep(0.1)

    def _take(self, channel: bytes, data: bytes) -> None:
        d = orjson.loads(data)
        if channel.startswith(b"orderbook:"):
            bids, asks = d["bids"], d["asks"]
            top = (bids[0][0], bids[0][1], asks[0][0], asks[0][1]) if bids and asks else None
            self.books.append((d["symbol"], d["last_update_id"], d["synced"], top))
            self.book_seqs.append((d["symbol"], d["seq"]))
        else:
            self.trades.append((d["symbol"], d["trade_id"]))

    def wrong_books(self, tickers: dict[tuple[str, int], Ticker]) -> tuple[int, list[str]]:
        """(synced books comparable with a ticker, those whose top differs)."""
        comparable, wrong = 0, []
        for sym, u, synced, top in list(self.books):
            t = tickers.get((sym, u))
            if not synced or t is None:
                continue
            comparable += 1
            if top != t:
                wrong.append(f"redis {sym} u={u}: {top} != ticker {t}")
        return comparable, wrong

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


@dataclass
class Accounts:
    """(records the rings held, records the publisher counted) of trades and books.

    first_trade..trades_end: the trades ring's records since the publisher began, up to
    where everything stood still.
    """

    trades: tuple[int, int]
    books: tuple[int, int]
    first_trade: int
    trades_end: int

    @property
    def exact(self) -> bool:
        return self.trades[0] == self.trades[1] and self.books[0] == self.books[1]

    def __str__(self) -> str:
        return f"trades {self.trades[0]}/{self.trades[1]}, books {self.books[0]}/{self.books[1]}"


class Live:
    """`mdpipe start --config config/demo.toml` on free ports, faster and deeper than the demo.

    The feed takes every diff (depth@0ms) so most book records meet a ticker; the simulator
    runs `rate` messages/s; the rings hold minutes of it, so the test's own logs never lap.
    """

    def __init__(
        self,
        instance: str,
        redis_url: str,
        tmp: Path,
        *,
        rate: int = 1000,
        sets: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.instance = instance
        self.redis_url = redis_url
        base = {
            "sim.rate": str(rate),
            "feeds.0.depth_stream": "depth@0ms",
            "feeds.0.trade_stream": "trade",
            "shm.book_capacity": str(1 << 17),
            "shm.trade_capacity": str(1 << 17),
            "supervisor.dead_letter_dir": str(tmp / "dead"),
        }
        args = [arg for k, v in base.items() for arg in ("--set", f"{k}={v}")]
        args += [arg for kv in sets for arg in ("--set", kv)]
        self.run = Running(instance, redis_url, tmp, extra=[*args, *extra], env=env)
        self.sim = SimControl(self.run.sim_port)
        self.tickers: TickerCollector | None = None
        self.books: RecordLog | None = None
        self.trades: RecordLog | None = None

    def start(self, timeout: float = 60) -> Live:
        """Start the instance, wait for /ready, then collect ground truth and records."""
        self.run.start().wait_ready(timeout)
        self.tickers = TickerCollector(self.sim.ws_url, SYMBOLS).start()
        self.books = RecordLog(self.instance, BOOKS, "book")
        self.trades = RecordLog(self.instance, TRADES, "trade")
        return self

    def ingest(self) -> dict[str, int]:
        return counters(self.instance, BOOKS)

    def publisher(self) -> dict[str, int]:
        return counters(self.instance, "publisher")

    def drain(self) -> None:
        """Keep the test's own record logs from falling a ring behind."""
        for log in (self.books, self.trades):
            if log is not None:
                log.drain()

    def synced(self) -> bool:
        """Every book synced, in the counters and in the ring (the ingest counts a book synced
        a moment before its first synced record), and every connection up (draining the logs
        meanwhile)."""
        self.drain()
        c = self.ingest()
        return (
            c.get("g_books_synced") == len(SYMBOLS)
            and c.get("g_connections_expected", 0) > 0
            and c.get("g_connections") == c.get("g_connections_expected")
            and (self.books is None or synced_in_ring(self.books) == len(SYMBOLS))
        )

    def wait_synced(self, what: str, timeout: float = 30) -> float:
        return wait(self.synced, timeout, what)

    def check_exact(self) -> tuple[int, int]:
        """No synced record in the ring or in Redis disagrees with the exchange.

        Returns (ring records compared, rebuilds of a book).
        """
        records = self.books.drain()
        check_record_invariants(records, depth=20)
        rebuilds = check_continuity(records, futures=True)
        comparable, wrong = compare_with_tickers(records, SYMBOLS, self.tickers.tickers)
        assert not wrong, f"{len(wrong)} of {comparable} ring records disagree: {wrong[:5]}"
        return comparable, rebuilds

    def ring_index(self, kind: str, symbol: str, key: int) -> int:
        """Position in its ring of a trade (by trade id) or a book (by its first record number)."""
        log, field = (self.trades, "trade_id") if kind == "trade" else (self.books, "symbol_seq")
        recs = log.drain()
        sid = SYMBOLS.index(symbol)
        hit = np.flatnonzero((recs["symbol_id"] == sid) & (recs[field] == key))
        assert len(hit), f"{kind} {symbol} {key} is not in the ring"
        return int(hit[0])

    def accounts(self, tap: RedisTap, seconds: float = 3.0) -> Accounts:
        """What the rings held since the publisher began, against what it counted.

        Counted: published + dropped + conflated + lost, compared while the exchange is
        silent (the feed's silence_timeout must exceed `seconds`), the rings stand still and
        the publisher caught up; returns once the feed flows again. The publisher began at
        the first record Redis got (the tap subscribed before the instance ran).
        """
        # On a loaded machine the silence can end before the backlog is through: silence the
        # exchange again. The figures are those of the readings that stood still, not read
        # again after (when the feed may flow again).
        for _ in range(5):
            self.sim.inject("silence", seconds=seconds)
            still = self._standing_still(seconds + 5)
            if still is not None:
                break
        else:
            raise AssertionError("the rings and the publisher never stood still in a silence")
        books_end, end, c = still
        first_trade = self.ring_index("trade", *tap.trades[0])
        first_book = self.ring_index("book", *tap.book_seqs[0])
        trades = c["trades_published"] + c["dropped_trades"] + c["trades_lost"]
        books = c["books_published"] + c["dropped_books"] + c["books_conflated"]
        books += c["books_lost"]
        held_books = books_end - first_book
        c0 = cursor(self.instance, BOOKS)
        wait(lambda: cursor(self.instance, BOOKS) > c0, seconds + 10, "the feed after the silence")
        return Accounts((end - first_trade, trades), (held_books, books), first_trade, end)

    def _standing_still(self, timeout: float) -> tuple[int, int, dict[str, int]] | None:
        """(books cursor, trades cursor, publisher counters) once two readings 0.3 s apart are
        equal with nothing left for the publisher; None if that did not happen in time."""
        last = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            now = (cursor(self.instance, BOOKS), cursor(self.instance, TRADES), self.publisher())
            if now == last and now[2].get("g_lag_records") == 0:
                return now
            last = now
            time.sleep(0.3)
        return None

    def close(self) -> None:
        """Stop everything this object started; the instance with `mdpipe stop` if it runs."""
        if self.tickers is not None:
            self.tickers.stop()
        for log in (self.books, self.trades):
            if log is not None:
                log.close()
        if self.run.proc is not None and self.run.proc.poll() is None:
            self.run.stop()
        self.run.kill()


SEQREADER = Path(__file__).with_name("seqreader.py")


class SeqReader(ReaderProcess):
    """tests/chaos/seqreader.py in its own process: reports what it read, lost and skipped."""

    def __init__(self, instance: str, seconds: float) -> None:  # same reporting as the base
        self.proc = subprocess.Popen(
            [PY, str(SEQREADER), instance, str(seconds)], stdout=subprocess.PIPE, cwd=REPO
        )
        self.reports: list[dict] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def n(self) -> int:
        """Records read so far."""
        got = self.latest()
        return got["n"] if got else 0
