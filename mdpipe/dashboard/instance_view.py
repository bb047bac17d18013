"""The instance half of a dashboard frame: health, ring rates, latency, feeds, publisher lag.

Everything comes from segment headers (one `iter_status` pass per frame, about a millisecond)
except the latency percentiles, which read the newest records of each ring and are
recomputed once a second: they describe a window of records, not one instant.
"""

from __future__ import annotations

import time
from collections import deque

from mdpipe.metrics import (
    publisher_lag,
    quantiles,
    recent_latencies,
    ring_labels,
    supervisor_children,
    supervisor_summary,
)
from mdpipe.shm.segment import SegmentStatus

RATE_WINDOW_S = 1.0  # rates are averaged over the last second of samples
LATENCY_EVERY_S = 1.0
LATENCY_SAMPLE = 2048  # the same window as /metrics, so the page and Prometheus agree
FEED_COUNTERS = ("gaps", "resyncs", "reconnects", "snapshots", "parse_errors", "crossed_books")


def _percentiles(values_ns: object, scale: float) -> dict[str, float] | None:
    qs = quantiles(values_ns)
    if qs is None:
        return None
    return dict(zip(("p50", "p99", "p99_9"), (round(q / scale, 3) for q in qs), strict=True))


class InstanceView:
    """Builds the instance part of each frame; keeps the history that rates need."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._cursors: dict[str, deque[tuple[float, int]]] = {}
        self._latency: dict[str, tuple[float, int, dict]] = {}

    def sample(self, statuses: list[SegmentStatus]) -> dict:
        """A JSON-able view of the instance at this moment."""
        now = time.time_ns()
        mono = time.monotonic()
        by_ring = {st.ring: st for st in statuses}
        data = [st for st in statuses if st.kind in ("book", "trade")]
        out: dict = {
            "instance": self.instance,
            "time_ns": now,
            "supervisor": None,
            "processes": [],
            "rings": [self._ring(st, now, mono) for st in sorted(data, key=lambda s: s.ring)],
            "feeds": [self._feed(st) for st in data if st.kind == "book"],
            "publisher": None,
            "markets": [
                {"ring": st.ring, "exchange": st.exchange, "symbol": sym}
                for st in sorted(data, key=lambda s: s.ring)
                if st.kind == "book"
                for sym in st.symbols
            ],
        }
        for gone in set(self._cursors) - set(by_ring):
            self._cursors.pop(gone, None)
            self._latency.pop(gone, None)
        cores = {f"ingest.{f['feed']}.{f['shard']}": f["core"] for f in out["feeds"] if f["alive"]}
        sup = by_ring.get("supervisor")
        if sup is not None:
            out["supervisor"] = supervisor_summary(sup, now)
            out["processes"] = [
                {
                    "name": child["name"],
                    "pid": child["pid"] or None,
                    "alive": child["up"],
                    "restarts": child["restarts"],
                    "uptime_s": round((now - child["since_ns"]) / 1e9, 1) if child["up"] else None,
                    "core": cores.get(child["name"]),
                }
                for child in supervisor_children(sup)
            ]
        pub = by_ring.get("publisher")
        if pub is not None:
            c = pub.counters
            lag = publisher_lag(pub, data, now)
            out["publisher"] = {
                "alive": pub.writer_alive,
                "lag_records": lag["g_lag_records"],
                "lag_ms": round(lag["g_lag_ns"] / 1e6, 3),
                "redis_up": bool(c.get("g_redis_up", 0)) and pub.writer_alive,
                "redis_errors": c.get("redis_errors", 0),
                "books_published": c.get("books_published", 0),
                "trades_published": c.get("trades_published", 0),
                "books_conflated": c.get("books_conflated", 0),
                "dropped": c.get("dropped_books", 0) + c.get("dropped_trades", 0),
            }
        return out

    def _ring(self, st: SegmentStatus, now: int, mono: float) -> dict:
        feed, shard = ring_labels(st.ring)
        history = self._cursors.setdefault(st.ring, deque())
        if history and history[-1][1] > st.write_cursor:
            history.clear()  # a new writer started the ring over
        history.append((mono, st.write_cursor))
        while len(history) > 2 and mono - history[1][0] >= RATE_WINDOW_S:
            history.popleft()
        t0, c0 = history[0]
        rate = round((st.write_cursor - c0) / (mono - t0), 1) if mono > t0 else None
        return {
            "ring": st.ring,
            "kind": st.kind,
            "exchange": st.exchange,
            "feed": feed,
            "shard": shard,
            "alive": st.writer_alive,
            "generation": st.generation,
            "messages": st.write_cursor,
            "rate": rate if st.writer_alive else 0.0,
            "age_s": round(max(0, now - st.heartbeat_ns) / 1e9, 3),
            "latency": self._latency_of(st, mono),
        }

    def _latency_of(self, st: SegmentStatus, mono: float) -> dict | None:
        cached = self._latency.get(st.ring)
        if cached and cached[1] == st.generation and mono - cached[0] < LATENCY_EVERY_S:
            return cached[2]
        block = None
        if st.write_cursor:
            try:
                lat = recent_latencies(self.instance, st.ring, LATENCY_SAMPLE)
            except Exception:  # the ring vanished or was replaced while we read it
                lat = None
            if lat is not None:
                block = {
                    "sample": int(len(lat["feed_to_ring"])),
                    "feed_to_ring_us": _percentiles(lat["feed_to_ring"], 1e3),
                    "exchange_to_local_ms": _percentiles(lat["exchange_to_local"], 1e6),
                }
        self._latency[st.ring] = (mono, st.generation, block)
        return block

    @staticmethod
    def _feed(st: SegmentStatus) -> dict:
        feed, shard = ring_labels(st.ring)
        c = st.counters
        return {
            "feed": feed,
            "shard": shard,
            "ring": st.ring,
            "exchange": st.exchange,
            "alive": st.writer_alive,
            "core": c.get("g_core"),
            "connections": c.get("g_connections", 0) if st.writer_alive else 0,
            "connections_expected": c.get("g_connections_expected", 0),
            "books_synced": c.get("g_books_synced", 0) if st.writer_alive else 0,
            "books_total": c.get("g_books_total", 0),
            **{k: c.get(k, 0) for k in FEED_COUNTERS},
        }
