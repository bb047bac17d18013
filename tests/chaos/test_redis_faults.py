"""Redis stopped, slow and full under a running instance.

Ingest never waits for Redis (its ring cursors keep moving through every fault), the
publisher comes back by itself, and its counts add up: published + dropped + conflated + lost
equals what the rings held. No trade is dropped: they wait in their ring and reach Redis late. (A publisher against a killed Redis with a synthetic writer is
tests/test_publisher.py::test_redis_killed_and_restarted; here it is the whole instance.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from .conftest import Report
from .live import BOOKS, TRADES, Live, RedisTap, cursor, wait

FAULT_S = 3.0


class Fault:
    """One Redis fault held for FAULT_S against a live instance, then measured and checked."""

    def __init__(self, live: Live, tap: RedisTap, report: Report, rate: float) -> None:
        self.live, self.tap, self.report, self.rate = live, tap, report, rate

    def run(self, name: str, begin: Callable[[], None], end: Callable[[], None]) -> None:
        live = self.live
        before = live.publisher()
        c0 = cursor(live.instance, BOOKS)
        begin()
        stop = time.monotonic() + FAULT_S
        behind = 0
        while time.monotonic() < stop:
            live.drain()
            behind = max(behind, self._backlog())
            time.sleep(0.05)
        wrote = cursor(live.instance, BOOKS) - c0
        during = live.publisher()
        end()
        took = wait(self._publishing(during), 30, f"the publisher back after: {name}")
        accounts = live.accounts(self.tap)
        after = live.publisher()
        dropped = {k: after[k] - before[k] for k in ("dropped_books", "dropped_trades")}
        errors = after["redis_errors"] - before["redis_errors"]
        lost_trades = after["trades_lost"] - before["trades_lost"]
        self.report(
            name,
            f"ingest wrote {wrote} books meanwhile (never waits for Redis); the publisher up "
            f"to {behind} records behind, {errors} Redis errors, recovered; "
            f"rings held/counted: {accounts}",
            took,
            f"{dropped['dropped_books']} books not sent (counted as dropped; newest book per "
            f"symbol re-sent), {dropped['dropped_trades']} trades dropped, "
            f"{lost_trades} lost (every other trade sent late, in order)"
            if any(dropped.values()) or lost_trades
            else "nothing",
        )
        # Trades wait in their ring through the fault and all reach Redis afterwards.
        assert dropped["dropped_trades"] == 0 and lost_trades == 0, (name, dropped, lost_trades)
        # Generous: the machine is shared, but a stalled ingest would write ~nothing.
        assert wrote > 0.3 * self.rate * FAULT_S, (name, wrote, self.rate)
        assert accounts.exact, (name, str(accounts))

    def _backlog(self) -> int:
        """Records in the rings the publisher has not handled yet (from its saved cursors).

        Its own lag gauges cannot move while a command is blocked in Redis; these can.
        """
        c = self.live.publisher()
        return sum(
            cursor(self.live.instance, ring) - c.get("g_cursor_" + ring.replace(".", "_"), 0)
            for ring in (BOOKS, TRADES)
        )

    def _publishing(self, during: dict[str, int]) -> Callable[[], bool]:
        def ok() -> bool:
            self.live.drain()
            c = self.live.publisher()
            return c.get("g_redis_up") == 1 and c["books_published"] > during["books_published"]

        return ok


def test_redis_stopped_slow_and_full(instance, redis_server, tmp_path, report: Report) -> None:
    tap = RedisTap(redis_server.url).start()
    live = Live(instance, redis_server.url, tmp_path)
    admin = redis.Redis.from_url(redis_server.url, socket_timeout=10)
    try:
        live.start()
        t0, c0 = time.monotonic(), cursor(instance, BOOKS)
        time.sleep(1.0)
        fault = Fault(live, tap, report, (cursor(instance, BOOKS) - c0) / (time.monotonic() - t0))

        fault.run("Redis killed for 3 s, restarted", redis_server.stop, redis_server.start)
        assert live.publisher()["redis_reconnects"] >= 1

        # Slow: every client paused; shorter than the publisher's socket timeout (2 s), then
        # longer. A blocked command is what DEBUG SLEEP would cause, which Redis 7 disables.
        admin.close()  # the restarted server dropped it
        pause = int(FAULT_S * 1000)
        fault.run("Redis slow: CLIENT PAUSE 1.5 s", lambda: admin.client_pause(1500), lambda: None)
        fault.run(
            "Redis stalled: CLIENT PAUSE 3 s",
            lambda: admin.client_pause(pause),
            lambda: wait(lambda: admin.ping(), 10, "the pause to end"),
        )

        # Full: writes refused with OOM (PUBLISH still works; SET does not).
        def fill() -> None:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1mb")
            used = int(admin.info("memory")["used_memory"])
            if used < 1 << 20:  # not full yet on this build: make it so
                admin.config_set("maxmemory", str(used // 2))

        fault.run("Redis full: maxmemory 1mb, noeviction (OOM)", fill,
                  lambda: admin.config_set("maxmemory", "0"))  # fmt: skip
        c = live.publisher()
        assert c["books_republished"] >= 3 and c["g_redis_up"] == 1
        comparable, wrong = tap.wrong_books(live.tickers.tickers)
        assert not wrong, wrong[:5]
        assert comparable > 100
        live.check_exact()
    finally:
        admin.close()
        tap.stop()
        live.close()
