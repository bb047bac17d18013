"""`mdpipe stats`: what a running instance does, read from its segments without disturbing it.

Rates come from two samples of each ring's write cursor; latency percentiles from the most
recent records in each ring (commit - receive: feed to ring; receive - exchange: exchange to
us). The same snapshot prints as an aligned table or, with --json, as one JSON object.
"""

from __future__ import annotations

import logging
import sys
import time

import click
import orjson

from mdpipe.metrics import (
    RING_KINDS,
    publisher_lag,
    quantiles,
    recent_latencies,
    refused_here,
    ring_labels,
    supervisor_children,
    supervisor_summary,
)
from mdpipe.readers import list_instances
from mdpipe.runtime import RuntimeStateError, is_own_segment
from mdpipe.shm.segment import SegmentStatus, iter_status
from mdpipe.supervisor import default_instance, read_lock, running_instances

LATENCY_SAMPLE = 10_000
INGEST_COLUMNS = (
    "gaps",
    "resyncs",
    "parse_errors",
    "dead_lettered",
    "reconnects",
    "rollovers",
    "snapshots",
    "stream_faults",
    "crossed_books",
)

DERIVED_COLUMNS = (
    "tickers",
    "g_tickers_stale",
    "g_funding_stale",
    "candles",
    "candles_amended",
    "candles_late_dropped",
)


class NotRunningError(LookupError):
    """No segment of the instance exists."""


def _statuses(instance: str) -> dict[str, SegmentStatus]:
    return {st.ring: st for st in iter_status(instance)}


def _latency_block(instance: str, ring: str) -> dict[str, dict[str, float] | None]:
    try:
        lat = recent_latencies(instance, ring, LATENCY_SAMPLE)
    except Exception:  # the ring vanished or was replaced while we read it
        return {"feed_to_ring_us": None, "exchange_to_local_ms": None, "sample": 0}
    out: dict = {"sample": int(len(lat["feed_to_ring"]))}
    for key, name, scale in (
        ("feed_to_ring", "feed_to_ring_us", 1e3),
        ("exchange_to_local", "exchange_to_local_ms", 1e6),
    ):
        qs = quantiles(lat[key])
        out[name] = (
            None
            if qs is None
            else dict(zip(("p50", "p99", "p99_9"), (round(q / scale, 3) for q in qs), strict=True))
        )
    return out


def collect(
    instance: str, interval: float = 0.5, previous: dict[str, tuple[int, float]] | None = None
) -> dict:
    """A JSON-able snapshot of an instance; rates over `interval` (or since `previous`)."""
    first = _statuses(instance)
    if not first:
        raise NotRunningError(instance)
    if previous is None:
        t0 = time.monotonic()
        previous = {ring: (st.write_cursor, t0) for ring, st in first.items()}
        time.sleep(interval)
    now_mono = time.monotonic()
    statuses = _statuses(instance) or first
    now = time.time_ns()
    snap: dict = {
        "instance": instance,
        "time_ns": now,
        "supervisor": None,
        "processes": [],
        "rings": [],
        "publisher": None,
        "archiver": None,
        "recorders": [],
        "refused_segments": refused_here(instance, statuses),
        "cursors": {},
    }
    try:
        lock = read_lock(instance)
    except RuntimeStateError:
        lock = None  # a lock file that is not ours proves nothing: show the segments only
    sup = statuses.get("supervisor")
    if sup is not None:
        snap["supervisor"] = supervisor_summary(sup, now) | {"http": (lock or {}).get("http")}
        for child in supervisor_children(sup):
            snap["processes"].append(
                {
                    "name": child["name"],
                    "pid": child["pid"] or None,
                    "alive": child["up"],
                    "restarts": child["restarts"],
                    "uptime_s": round((now - child["since_ns"]) / 1e9, 1) if child["up"] else None,
                    "core": None,
                }
            )
    for ring, st in sorted(statuses.items()):
        snap["cursors"][ring] = (st.write_cursor, now_mono)
        if st.kind not in RING_KINDS:
            continue
        before, t0 = previous.get(ring, (st.write_cursor, now_mono))
        dt = now_mono - t0
        feed, shard = ring_labels(ring)
        row = {
            "ring": ring,
            "kind": st.kind,
            "feed": feed,
            "shard": shard,
            "exchange": st.exchange,
            "writer_pid": st.writer_pid,
            "alive": st.writer_alive,
            "generation": st.generation,
            "messages": st.write_cursor,
            "rate": round((st.write_cursor - before) / dt, 1) if dt > 0 else None,
            "age_s": round(max(0, now - st.heartbeat_ns) / 1e9, 3),
            "symbols": len(st.symbols),
            "counters": st.counters,
            "latency": (
                _latency_block(instance, ring)
                if st.write_cursor and st.kind in ("book", "trade")
                else None
            ),
        }
        snap["rings"].append(row)
        if st.kind == "book":
            core = st.counters.get("g_core")
            for proc in snap["processes"]:
                if proc["name"] == f"ingest.{feed}.{shard}":
                    proc["core"] = core
    pub = statuses.get("publisher")
    if pub is not None:
        c = pub.counters
        data = [st for st in statuses.values() if st.kind in RING_KINDS]
        lag = publisher_lag(pub, data, time.time_ns())
        snap["publisher"] = {
            "pid": pub.writer_pid,
            "alive": pub.writer_alive,
            "lag_records": lag["g_lag_records"],
            "lag_ms": round(lag["g_lag_ns"] / 1e6, 3),
            "redis_up": bool(c.get("g_redis_up", 0)),
            "redis_errors": c.get("redis_errors", 0),
            "counters": c,
        }
    arch = statuses.get("archiver")
    if arch is not None:
        c = arch.counters
        snap["archiver"] = {
            "pid": arch.writer_pid,
            "alive": arch.writer_alive,
            "lag_records": c.get("g_lag_records", 0),
            "lag_s": round(c.get("g_lag_ns", 0) / 1e9, 3),
            "counters": c,
        }
    for name, st in sorted(statuses.items()):
        if name.startswith("recorder."):
            snap["recorders"].append(
                {"name": name, "alive": st.writer_alive, "counters": st.counters}
            )
    if not snap["processes"]:  # no supervisor: list the writers themselves
        seen = set()
        for st in statuses.values():
            if st.writer_pid and st.writer_pid not in seen:
                seen.add(st.writer_pid)
                snap["processes"].append(
                    {
                        "name": _writer_name(st.ring),
                        "pid": st.writer_pid,
                        "alive": st.writer_alive,
                        "restarts": max(0, st.generation - 1),
                        "uptime_s": round((now - st.start_time_ns) / 1e9, 1),
                        "core": st.counters.get("g_core") if st.kind == "book" else None,
                    }
                )
    return snap


def _writer_name(ring: str) -> str:
    feed, shard = ring_labels(ring)
    return f"ingest.{feed}.{shard}" if feed else ring


# ----- rendering --------------------------------------------------------------------------


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: list[str], rows: list[list[object]]) -> str:
    """An aligned text table: text columns left-aligned, numbers right-aligned."""
    cells = [[_fmt(v) for v in row] for row in rows]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and rows
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if numeric[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def _pid(pid: int | None) -> str:
    return str(pid) if pid else "-"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.0f}m"


def _triple(block: dict[str, float] | None) -> str:
    if not block:
        return "-"
    return "/".join(
        f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
        for v in (block[k] for k in ("p50", "p99", "p99_9"))
    )


def render(snap: dict) -> str:
    """The snapshot as text tables for a terminal."""
    out = []
    sup = snap["supervisor"]
    head = f"mdpipe instance {snap['instance']}"
    if sup:
        state = "running" if sup["alive"] else "SUPERVISOR NOT RUNNING"
        head += (
            f" — supervisor pid {sup['pid']} {state}, up {_age(sup['uptime_s'])}, "
            f"children {sup['children_up']}/{sup['children']} up, restarts {sup['restarts']}"
        )
        if sup.get("http"):
            head += f", {sup['http']}/metrics"
    else:
        head += " — no supervisor (segments only)"
    out.append(head)
    out.append("")
    procs = snap["processes"]
    out.append(
        table(
            ["PROCESS", "PID", "ALIVE", "CORE", "UPTIME", "RESTARTS"],
            [
                [
                    p["name"],
                    _pid(p["pid"]),
                    p["alive"],
                    p["core"],
                    _age(p["uptime_s"]),
                    p["restarts"],
                ]
                for p in procs
            ],
        )
    )
    out.append("")
    rows = []
    for r in snap["rings"]:
        lat = r["latency"] or {}
        rows.append(
            [
                r["ring"],
                _pid(r["writer_pid"]),
                r["alive"],
                r["messages"],
                r["rate"],
                _age(r["age_s"]),
                _triple(lat.get("feed_to_ring_us")),
                _triple(lat.get("exchange_to_local_ms")),
            ]
        )
    out.append(
        table(
            [
                "RING",
                "WRITER",
                "ALIVE",
                "MESSAGES",
                "RATE/S",
                "LAST WRITE",
                "FEED->RING µs p50/p99/p99.9",
                "EXCH->US ms p50/p99/p99.9",
            ],
            rows,
        )
    )
    books = [r for r in snap["rings"] if r["kind"] == "book"]
    if books:
        out.append("")
        rows = []
        for r in books:
            c = r["counters"]
            synced = f"{c.get('g_books_synced', 0)}/{c.get('g_books_total', 0)}"
            conns = f"{c.get('g_connections', 0)}/{c.get('g_connections_expected', 0)}"
            feed = f"{r['feed']}.{r['shard']}"
            counts = (c.get(k, 0) for k in INGEST_COLUMNS)
            rows.append([feed, conns, synced, *counts, r.get("exchange") or "-"])
        out.append(
            table(
                [
                    "INGEST",
                    "CONNS",
                    "SYNCED",
                    *(k.upper().replace("_", " ") for k in INGEST_COLUMNS),
                    "EXCHANGE",
                ],
                rows,
            )
        )
    derived = [r for r in books if r["counters"].get("tickers") or r["counters"].get("candles")]
    if derived:
        out.append("")
        rows = []
        stale_notes = []
        for r in derived:
            c = r["counters"]
            feed = f"{r['feed']}.{r['shard']}"
            rows.append([feed, *(c.get(k, 0) for k in DERIVED_COLUMNS)])
            for key, what in (
                ("g_tickers_stale", "ticker"),
                ("g_funding_stale", "mark price / funding"),
            ):
                if c.get(key):
                    stale_notes.append(
                        f"STALE: ingest {feed}: {c[key]} symbol(s) with no {what} update "
                        "for ticker_timeout"
                    )
        out.append(
            table(
                [
                    "TICKERS",
                    *(k.removeprefix("g_").upper().replace("_", " ") for k in DERIVED_COLUMNS),
                ],
                rows,
            )
        )
        out.extend(stale_notes)
    pub = snap["publisher"]
    if pub:
        c = pub["counters"]
        out.append("")
        out.append(
            table(
                [
                    "PUBLISHER",
                    "ALIVE",
                    "BOOKS",
                    "TRADES",
                    "CONFLATED",
                    "LAG RECORDS",
                    "LAG MS",
                    "REDIS UP",
                    "REDIS ERRORS",
                    "DROPPED",
                ],
                [
                    [
                        _pid(pub["pid"]),
                        pub["alive"],
                        c.get("books_published", 0),
                        c.get("trades_published", 0),
                        c.get("books_conflated", 0),
                        pub["lag_records"],
                        pub["lag_ms"],
                        pub["redis_up"],
                        pub["redis_errors"],
                        c.get("dropped_books", 0) + c.get("dropped_trades", 0),
                    ]
                ],
            )
        )
    arch = snap["archiver"]
    if arch:
        c = arch["counters"]
        kinds = ("trades", "books", "tickers", "candles")
        heads = ["ARCHIVER", "ALIVE", "TRADES", "BOOKS", "TICKERS", "CANDLES", "FILES", "MB"]
        heads += ["LAG RECORDS", "LAG S", "LOST", "WRITE ERRORS"]
        row = [_pid(arch["pid"]), arch["alive"], *(c.get(f"{k}_archived", 0) for k in kinds)]
        row += [c.get("files_written", 0), round(c.get("bytes_written", 0) / 1e6, 2)]
        row += [arch["lag_records"], arch["lag_s"]]
        row += [sum(c.get(f"{k}_lost", 0) for k in kinds), c.get("write_errors", 0)]
        out += ["", table(heads, [row])]
    if snap["recorders"]:
        heads = ["RECORDER", "ALIVE", "FRAMES", "MB", "FILES", "DROPPED", "WRITE ERRORS", "QUEUE"]
        rows = []
        for r in snap["recorders"]:
            c = r["counters"]
            rows.append(
                [
                    r["name"].removeprefix("recorder."),
                    r["alive"],
                    c.get("frames_recorded", 0),
                    round(c.get("bytes_written", 0) / 1e6, 2),
                    c.get("files_finished", 0),
                    c.get("frames_dropped", 0),
                    c.get("write_errors", 0),
                    c.get("g_queue", 0),
                ]
            )
        out += ["", table(heads, rows)]
    refused = snap.get("refused_segments") or {}
    if refused:
        out.append("")
        out.append(
            table(
                ["IGNORED SEGMENT (not ours or invalid)", "WHY"],
                [list(r) for r in sorted(refused.items())],
            )
        )
    return "\n".join(out)


def quiet_segment_warnings() -> None:
    """Refused segments are reported in the command's own output, not as log lines."""
    logging.getLogger("mdpipe.shm").setLevel(logging.ERROR)


def not_running_message(instance: str) -> str:
    """Which instances do run, for a user who named one that does not."""
    running = set(running_instances())
    stale = set()
    for name, rings in list_instances().items():
        if name in running or not any(is_own_segment(name, ring) for ring in rings):
            continue  # never open another user's segments just to list names
        alive = any(st.writer_alive for st in iter_status(name))
        (running if alive else stale).add(name)
    msg = f"no mdpipe instance {instance!r} is running"
    refused = refused_here(instance)
    if refused:
        msg += f" (ignored {len(refused)} segment(s) under its name: " + "; ".join(
            f"{path} {why}" for path, why in sorted(refused.items())
        )
        msg += ")"
    msg += f"; running: {', '.join(sorted(running))}" if running else ", and no other either"
    if stale:
        msg += f" (segments of stopped instances: {', '.join(sorted(stale))})"
    return msg


def _public(snap: dict) -> dict:
    return {k: v for k, v in snap.items() if k != "cursors"}


@click.command("stats")
@click.option("--instance", help="Instance to show (default: the only one running).")
@click.option(
    "--watch",
    is_flag=False,
    flag_value=1.0,
    type=float,
    default=None,
    metavar="[SECONDS]",
    help="Redraw every SECONDS (default 1) until Ctrl-C.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (per refresh).")
def stats_command(instance: str | None, watch: float | None, as_json: bool) -> None:
    """Show processes, rings, rates, errors, lag and latency of a running instance."""
    quiet_segment_warnings()
    name = default_instance(instance)
    previous = None
    try:
        while True:
            try:
                snap = collect(name, interval=watch or 0.5, previous=previous)
            except NotRunningError:
                raise click.ClickException(not_running_message(name)) from None
            previous = snap["cursors"]
            if as_json:
                click.echo(orjson.dumps(_public(snap)).decode())
            else:
                text = render(snap)
                click.echo(("\x1b[H\x1b[2J" + text) if watch and sys.stdout.isatty() else text)
            if not watch:
                return
            time.sleep(watch)
    except KeyboardInterrupt:
        return
