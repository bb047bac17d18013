"""Every counter a component keeps in its segment, declared once with its meaning.

Writers register these names; `mdpipe stats`, /metrics (help texts and names), the README's
metrics table (`python -m mdpipe.counters`) and docs/layout.md are built from or checked
against these declarations, so the lists cannot drift. Names starting with `g_` are gauges
(current values); the others only increase.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BAD = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class Counter:
    """One counter or gauge: its name in the segment and what it counts."""

    name: str
    help: str

    @property
    def gauge(self) -> bool:
        return self.name.startswith("g_")


@dataclass(frozen=True)
class Family:
    """Counters named by a prefix plus a key known only at run time (per child, ring, kind)."""

    prefix: str
    key: str  # what the suffix is, e.g. "child index", "ring"
    help: str

    @property
    def gauge(self) -> bool:
        return self.prefix.startswith("g_")


@dataclass(frozen=True)
class CounterSet:
    """The counters of one component (the `<component>` of mdpipe_<component>_<name>)."""

    component: str
    counters: tuple[Counter, ...]
    families: tuple[Family, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The fixed names, in the order writers register them."""
        return tuple(c.name for c in self.counters)

    def describe(self, raw: str) -> str:
        """The help text of a counter as stored in a segment (a fixed name or a family's)."""
        for c in self.counters:
            if c.name == raw:
                return c.help
        for f in self.families:
            if raw.startswith(f.prefix):
                return f"{f.help} ({f.key} {raw[len(f.prefix) :]})"
        return f"{self.component} {'gauge' if raw.startswith('g_') else 'counter'} {raw}"

    def declares(self, raw: str) -> bool:
        return raw in self.names or any(raw.startswith(f.prefix) for f in self.families)


def metric_name(component: str, raw: str) -> tuple[str, str, float]:
    """(kind, Prometheus name, scale) of a stored counter: mdpipe_<component>_<name>_total for
    counters, mdpipe_<component>_<name> for gauges (g_ and any _total dropped), ns -> seconds."""
    gauge = raw.startswith("g_")
    name = _BAD.sub("_", raw[2:] if gauge else raw)
    scale = 1.0
    if gauge and name.endswith("_total"):
        name = name[: -len("_total")]
    if name.endswith("_ns"):
        name, scale = name[:-3] + "_seconds", 1e-9
    return ("gauge" if gauge else "counter"), f"mdpipe_{component}_{name}", scale


INGEST = CounterSet(
    "ingest",
    (
        Counter("frames", "WebSocket frames received"),
        Counter("depth_diffs", "order-book diffs applied or buffered"),
        Counter("trades", "trades committed"),
        Counter("book_records", "book records committed"),
        Counter("parse_errors", "frames that could not be used (counted, dead-lettered, skipped)"),
        Counter("dead_lettered", "frames kept in the dead-letter file"),
        Counter("gaps", "update-id gaps detected (each starts a resync)"),
        Counter("resyncs", "book rebuilds"),
        Counter("snapshots", "snapshots applied (REST, or pushed on the stream by the venue)"),
        Counter("snapshot_errors", "REST snapshot requests that failed"),
        Counter("snapshots_rejected", "snapshots the sync rules refused (too old, a gap, a check)"),
        Counter("snapshot_resets", "books replaced by a snapshot the venue pushed mid-stream"),
        Counter("reconnects", "connection attempts after the first, failed or not"),
        Counter("connect_failures", "connection attempts that failed (handshake or connect)"),
        Counter("silences", "connections dropped for a silent feed"),
        Counter("stream_faults", "streams that never delivered, or subscriptions refused"),
        Counter("crossed_books", "books the exchange sent crossed (kept, flagged)"),
        Counter("rest_451", "REST replies 451 (region blocked)"),
        Counter("rest_429", "REST replies 429 (rate limited)"),
        Counter("rest_418", "REST replies 418 (IP banned)"),
        Counter("rest_5xx", "REST replies 5xx"),
        Counter("rest_403", "REST replies 403 (Bybit: access too frequent)"),
        Counter("server_shutdowns", "shutdown notices from the exchange"),
        Counter("rollovers", "connections replaced make-before-break"),
        Counter(
            "rollover_timeouts", "rollovers whose old socket had to be closed before catching up"
        ),
        Counter("duplicates", "frames both sockets delivered during a rollover (dropped once)"),
        Counter(
            "rest_paced_ms", "milliseconds snapshot requests waited for the REST weight budget"
        ),
        Counter("subscribed", "symbols added at runtime (mdpipe subscribe)"),
        Counter("unsubscribed", "symbols removed at runtime (mdpipe unsubscribe)"),
        Counter("tickers", "ticker records committed (mark price, funding, 24 h statistics)"),
        Counter("candles", "candles published (every interval ring)"),
        Counter("candles_amended", "published candles amended by a late trade"),
        Counter("candles_late_dropped", "trades too late for any candle still amendable"),
        Counter("g_tickers_stale", "symbols whose ticker streams sent nothing for ticker_timeout"),
        Counter("g_funding_stale", "symbols whose mark price / funding stopped for ticker_timeout"),
        Counter("g_connections", "connections up"),
        Counter("g_connections_expected", "connections planned"),
        Counter("g_books_synced", "books exact by the venue's sync rules"),
        Counter("g_books_total", "books kept"),
        Counter("g_rest_weight", "REST weight used this minute, as the venue last reported it"),
        Counter("g_core", "the CPU core the process is pinned to"),
        Counter("g_pinned", "1 when the pinning was verified"),
    ),
    (Family("err_", "error kind", "bad input by kind"),),
)

PUBLISHER = CounterSet(
    "publisher",
    (
        Counter("books_published", "books sent to Redis"),
        Counter("trades_published", "trades sent to Redis"),
        Counter("market_data_published", "market_data summaries sent to Redis"),
        Counter("books_conflated", "books skipped for a newer one of the same symbol"),
        Counter("trades_lost", "trades the publisher was lapped on (never read)"),
        Counter("books_lost", "books the publisher was lapped on"),
        Counter("dropped_books", "books read but not delivered (Redis down)"),
        Counter("dropped_trades", "trades read but not delivered (0: trades wait in their ring)"),
        Counter("redis_errors", "Redis calls that failed"),
        Counter("redis_reconnects", "Redis reconnections"),
        Counter("books_republished", "newest books re-sent after an outage"),
        Counter("g_redis_up", "1 while Redis answers"),
        Counter("g_lag_records", "records written to the rings and not yet read"),
        Counter("g_lag_ns", "now minus the commit time of the newest record Redis has"),
        Counter("g_rings", "rings the publisher tails"),
        Counter("stream_entries", "entries added to the trades and books Redis Streams"),
        Counter("funding_published", "tickers (mark price, funding, 24 h) sent to funding:"),
        Counter("candles_published", "candles sent to candles:"),
        Counter("tickers_lost", "ticker and candle records the publisher was lapped on"),
    ),
    (
        Family("g_lag_", "ring", "records behind on one ring"),
        Family("g_cursor_", "ring", "the next record of the ring the publisher reads"),
    ),
)

SUPERVISOR = CounterSet(
    "supervisor",
    (
        Counter("restarts", "child restarts"),
        Counter("g_children", "children supervised"),
        Counter("g_children_up", "children running"),
    ),
    (
        Family("restarts.", "child index", "restarts of one child"),
        Family("g_up.", "child index", "1 while the child runs"),
        Family("g_pid.", "child index", "the child's pid"),
        Family("g_since_ns.", "child index", "start of the child's current run"),
    ),
)

ARCHIVER = CounterSet(
    "archiver",
    (
        Counter("trades_archived", "trades in finalized Parquet files"),
        Counter("books_archived", "book records in finalized Parquet files"),
        Counter("books_skipped", "book records left out by the history.book_interval_ms cadence"),
        Counter("trades_lost", "trades the archiver was lapped on (never read)"),
        Counter("books_lost", "book records the archiver was lapped on"),
        Counter("files_written", "Parquet files finalized"),
        Counter("bytes_written", "bytes of Parquet files finalized"),
        Counter("flushes", "flushes committed (files and cursors together)"),
        Counter("write_errors", "flushes that failed (disk full, permissions); retried"),
        Counter("days_expired", "day partitions deleted by history.keep_days"),
        Counter("days_compacted", "finished day partitions merged into one file each"),
        Counter("tickers_archived", "ticker records in finalized Parquet files"),
        Counter("candles_archived", "candle records (every revision) in finalized Parquet files"),
        Counter("tickers_lost", "ticker records the archiver was lapped on"),
        Counter("candles_lost", "candle records the archiver was lapped on"),
        Counter("g_lag_records", "records written to the rings and not yet read"),
        Counter("g_lag_ns", "now minus the commit time of the newest record in a finalized file"),
        Counter("g_buffered", "records read and waiting for the next flush"),
        Counter("g_rings", "rings the archiver tails"),
    ),
    (Family("g_cursor_", "ring", "the next record of the ring the archiver reads"),),
)

RECORDER = CounterSet(
    "recorder",
    (
        Counter("frames_recorded", "raw frames and REST snapshots written to tapes"),
        Counter("bytes_written", "compressed tape bytes written"),
        Counter("files_finished", "tapes completed (renamed from .part)"),
        Counter("frames_dropped", "frames not recorded: the writer lagged or a write failed"),
        Counter("write_errors", "tape writes that failed (disk full, permissions)"),
        Counter("files_expired", "tape days deleted by record.keep_days"),
        Counter("g_queue", "frames waiting for the tape writer"),
    ),
)

ALL = (INGEST, PUBLISHER, SUPERVISOR, ARCHIVER, RECORDER)


def markdown_table() -> str:
    """The README's table of every declared counter and gauge, generated."""
    rows = ["| metric | type | meaning |", "|---|---|---|"]
    for cs in ALL:
        for c in cs.counters:
            kind, name, _ = metric_name(cs.component, c.name)
            rows.append(f"| `{name}{'_total' if kind == 'counter' else ''}` | {kind} | {c.help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
