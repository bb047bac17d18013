"""Prometheus metrics read straight from the shared-memory segments on every scrape.

A custom Collector (no multiprocess directory): each scrape maps the instance's segment
headers read-only, so what /metrics says is exactly what `mdpipe stats` says.

Naming: mdpipe_<component>_<counter>_total for counters, mdpipe_<component>_<gauge> for
gauges (the `g_` prefix and any `_total` dropped), `_ns` values converted to `_seconds`. Components: ingest
(labels feed, shard), publisher, supervisor, ring (labels ring, kind, feed, shard), process.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from mdpipe.counters import ALL, metric_name
from mdpipe.readers import attach
from mdpipe.shm.segment import SegmentStatus, iter_status, refused_segments, shm_path

QUANTILES = (0.5, 0.99, 0.999)
LATENCY_SAMPLE = 2048  # recent records per ring behind the latency quantiles of a scrape
LATENCY_BUDGET_S = 1.0  # past this, a scrape skips the remaining rings' latency samples
_BAD = re.compile(r"[^a-zA-Z0-9_]")
DECLARED = {cs.component: cs for cs in ALL}


RING_KINDS = ("book", "trade", "ticker", "candle")  # segments with records (not status)


def ring_labels(ring: str) -> tuple[str, str]:
    """(feed, shard) of an ingest ring named books.<feed>.<shard> / trades.<feed>.<shard>
    (or tickers.<feed>.<shard>, candles_<interval>.<feed>.<shard>)."""
    parts = ring.split(".")
    if len(parts) == 3 and (
        parts[0] in ("books", "trades", "tickers") or parts[0].startswith("candles_")
    ):
        return parts[1], parts[2]
    return "", ""


def supervisor_children(st: SegmentStatus) -> list[dict]:
    """Per child of a supervisor status segment: name, up, pid, restarts, since_ns."""
    c = st.counters
    return [
        {
            "name": name,
            "up": bool(c.get(f"g_up.{k}", 0)) and st.writer_alive,
            "pid": c.get(f"g_pid.{k}", 0),
            "restarts": c.get(f"restarts.{k}", 0),
            "since_ns": c.get(f"g_since_ns.{k}", 0),
        }
        for k, name in enumerate(st.symbols)
    ]


def supervisor_summary(sup: SegmentStatus, now_ns: int) -> dict:
    """The supervisor's own state from its status segment (stats and the dashboard show it)."""
    return {
        "pid": sup.writer_pid,
        "alive": sup.writer_alive,
        "uptime_s": round((now_ns - sup.start_time_ns) / 1e9, 1),
        "restarts": sup.counters.get("restarts", 0),
        "children": sup.counters.get("g_children", 0),
        "children_up": sup.counters.get("g_children_up", 0) if sup.writer_alive else 0,
    }


def recent_latencies(instance: str, ring: str, n: int) -> dict[str, np.ndarray]:
    """Feed-to-ring and exchange-to-us latencies (ns) of up to the last n records of a ring."""
    with attach(instance, ring) as reader:
        reader.seek_recent(n)
        recs = reader.read_batch(n)
    if not len(recs):
        empty = np.empty(0, np.int64)
        return {"feed_to_ring": empty, "exchange_to_local": empty}
    commit = recs["commit_ts_ns"].astype(np.int64)
    recv = recs["recv_ts_ns"].astype(np.int64)
    exch = recs["exchange_ts_ns"].astype(np.int64)
    has_exch = exch > 0
    return {"feed_to_ring": commit - recv, "exchange_to_local": (recv - exch)[has_exch]}


def refused_here(instance: str, valid: Iterable[str] = ()) -> dict[str, str]:
    """Segments under an instance's name that were refused (not ours, not valid) and are
    still there: path -> reason. Counted, never opened again, never shown as data.

    valid: rings read successfully just now (a name refused earlier may be ours again).
    """
    prefix = shm_path(instance, "")
    ok = {shm_path(instance, ring) for ring in valid}
    return {
        path: why
        for path, why in refused_segments().items()
        if path.startswith(prefix) and path not in ok and os.path.lexists(path)
    }


def quantiles(values: np.ndarray) -> list[float] | None:
    """p50, p99, p99.9 of values, or None when there are none."""
    if not len(values):
        return None
    return [float(v) for v in np.quantile(values, QUANTILES)]


class _Families:
    """Metric families by name, created on first use (each name once per scrape)."""

    def __init__(self) -> None:
        self.by_name: dict[str, Metric] = {}

    def add(self, kind: str, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        fam = self.by_name.get(name)
        if fam is None:
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            fam = self.by_name[name] = cls(name, doc, labels=list(labels))
        elif fam.type != kind:
            return  # a gauge and a counter that would share a name: keep the first
        fam.add_metric(list(labels.values()), value)


# Per-ring counters of other processes, named <base>_<ring with '.' as '_'>, are exported
# as one metric with a ring label; a base listed here also gets its unit in the name.
_PER_RING_NAMES = {"lag": "ring_lag_records"}


def _export_counters(
    fams: _Families,
    component: str,
    counters: dict[str, int],
    labels: dict[str, str],
    rings: dict[str, str] | None = None,
) -> None:
    """Counters as mdpipe_<component>_<name>_total; g_ gauges without the prefix; ns -> s.

    rings maps sanitized ring names to ring names, to recognise per-ring counters.
    """
    declared = DECLARED.get(component)
    for raw, value in counters.items():
        labels_here = labels
        stored = raw
        for key, ring in (rings or {}).items():
            if raw.endswith("_" + key) and len(raw) > len(key) + 3:
                base = raw[: -len(key) - 1]
                stored = (
                    "g_" + _PER_RING_NAMES.get(base[2:], base[2:])
                    if base.startswith("g_")
                    else base
                )
                labels_here = labels | {"ring": ring}
                break
        kind, full, scale = metric_name(component, stored)
        doc = declared.describe(raw) if declared else f"{component} {kind} {raw}"
        fams.add(kind, full, doc, labels_here, value * scale)


def publisher_lag(pub: SegmentStatus, rings: list[SegmentStatus], now_ns: int) -> dict[str, int]:
    """The publisher's lag gauges derived from shared memory: true even while it is stuck.

    Per ring, records behind = the writer's cursor - the read position the publisher saved
    for that ring (`g_cursor_<ring>`). A publisher blocked in a Redis call cannot update its
    own gauges, so when it is behind and its heartbeat is over a second old, its age is at
    least the time since that heartbeat.
    """
    c = pub.counters
    out: dict[str, int] = {}
    total = 0
    for st in rings:
        key = _BAD.sub("_", st.ring)
        cursor = c.get("g_cursor_" + key)
        if cursor is None:
            continue
        behind = max(0, st.write_cursor - cursor)
        out["g_lag_" + key] = behind
        total += behind
    out["g_lag_records"] = total
    lag_ns = c.get("g_lag_ns", 0)
    silent_ns = now_ns - pub.heartbeat_ns
    if total and silent_ns > 1_000_000_000:
        lag_ns = max(lag_ns, silent_ns)
    out["g_lag_ns"] = lag_ns
    return out


class InstanceCollector:
    """Collects every metric of one instance from its segments (a prometheus_client Collector)."""

    def __init__(self, instance: str, *, latency: bool = True) -> None:
        self.instance = instance
        self.latency = latency
        self._latency_until = 0.0

    def collect(self) -> Iterator[Metric]:
        self._latency_until = time.monotonic() + LATENCY_BUDGET_S
        fams = _Families()
        inst = self.instance
        now = time.time_ns()
        statuses = list(iter_status(inst))
        rings = {_BAD.sub("_", st.ring): st.ring for st in statuses if st.kind in RING_KINDS}
        for st in statuses:
            if st.kind in RING_KINDS:
                self._ring(fams, st, now)
            elif st.ring == "supervisor":
                self._supervisor(fams, st)
            else:
                # "recorder.<feed>.<shard>": one component, the process as a label
                head, _, rest = st.ring.partition(".")
                component = _BAD.sub("_", head if head in DECLARED and rest else st.ring)
                labels = {"instance": inst} | ({"process": st.ring} if rest else {})
                fams.add(
                    "gauge",
                    f"mdpipe_{component}_up",
                    f"1 when the {st.ring} process runs",
                    labels,
                    int(st.writer_alive),
                )
                counters = st.counters
                if st.ring == "publisher":
                    data = [r for r in statuses if r.kind in RING_KINDS]
                    counters = counters | publisher_lag(st, data, now)
                _export_counters(fams, component, counters, labels, rings)
        fams.add(
            "gauge",
            "mdpipe_segments_refused",
            "files under the instance's segment names that were refused (not ours or invalid)",
            {"instance": inst},
            len(refused_here(inst, (st.ring for st in statuses))),
        )
        yield from fams.by_name.values()

    def _ring(self, fams: _Families, st: SegmentStatus, now: int) -> None:
        feed, shard = ring_labels(st.ring)
        labels = {"instance": self.instance, "ring": st.ring, "kind": st.kind}
        # exchange is the venue and market ("bybit-linear"): one symbol on two venues is
        # two feeds, told apart by feed and exchange.
        labels |= {"feed": feed, "shard": shard, "exchange": st.exchange}
        fams.add(
            "counter",
            "mdpipe_ring_records",
            "records committed to the ring",
            labels,
            st.write_cursor,
        )
        fams.add("gauge", "mdpipe_ring_capacity_records", "ring slots", labels, st.capacity)
        fams.add("gauge", "mdpipe_ring_symbols", "symbols in the ring", labels, len(st.symbols))
        fams.add(
            "gauge",
            "mdpipe_ring_generation",
            "writer (re)starts of the ring",
            labels,
            st.generation,
        )
        fams.add(
            "gauge",
            "mdpipe_ring_writer_up",
            "1 when the ring's writer runs",
            labels,
            st.writer_alive,
        )
        fams.add(
            "gauge",
            "mdpipe_ring_last_write_age_seconds",
            "seconds since the writer's last commit or heartbeat",
            labels,
            max(0, now - st.heartbeat_ns) / 1e9,
        )
        if st.kind == "book":
            # The ingest process keeps its counters in its books segment.
            _export_counters(
                fams,
                "ingest",
                st.counters,
                {"instance": self.instance, "feed": feed, "shard": shard, "exchange": st.exchange},
            )
        if self.latency and st.write_cursor and time.monotonic() < self._latency_until:
            self._latency(fams, st, labels)

    def _latency(self, fams: _Families, st: SegmentStatus, labels: dict[str, str]) -> None:
        try:
            lat = recent_latencies(self.instance, st.ring, LATENCY_SAMPLE)
        except Exception:  # the ring vanished or changed between listing and reading
            return
        for key, doc in (
            ("feed_to_ring", "receive to ring commit latency of recent records"),
            ("exchange_to_local", "exchange event time to local receive of recent records"),
        ):
            qs = quantiles(lat[key])
            if qs is None:
                continue
            # A gauge per percentile of a recent window, not a summary: a summary's
            # quantiles come with cumulative _count and _sum, which a window has not.
            for q, v in zip(QUANTILES, qs, strict=True):
                fams.add(
                    "gauge",
                    f"mdpipe_ring_{key}_latency_seconds",
                    doc,
                    labels | {"percentile": f"{q * 100:g}"},
                    v / 1e9,
                )

    def _supervisor(self, fams: _Families, st: SegmentStatus) -> None:
        inst = {"instance": self.instance}
        fams.add(
            "gauge", "mdpipe_supervisor_up", "1 when the supervisor runs", inst, st.writer_alive
        )
        for name in ("restarts", "g_children", "g_children_up"):
            if name in st.counters:
                _export_counters(fams, "supervisor", {name: st.counters[name]}, inst)
        for child in supervisor_children(st):
            labels = inst | {"process": child["name"]}
            fams.add("gauge", "mdpipe_process_up", "1 when the process runs", labels, child["up"])
            fams.add(
                "counter",
                "mdpipe_process_restarts",
                "times the supervisor restarted the process",
                labels,
                child["restarts"],
            )
            if child["up"]:
                fams.add(
                    "gauge",
                    "mdpipe_process_start_time_seconds",
                    "when the running process started (unix time)",
                    labels,
                    child["since_ns"] / 1e9,
                )


def registry_for(instance: str) -> CollectorRegistry:
    """A registry holding only this instance's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InstanceCollector(instance))
    return registry
