"""What every venue package gives the ingest: common events, the book-sync contract, the venue.

The ingest loop (`mdpipe.ingest.shard.Shard`) owns sockets, timers, counters and rings, and
knows no venue's rules. A venue package (`mdpipe.venues.<name>`) owns them all and does no
I/O: it is fed frames, REST bodies and status codes, and answers with common events (below)
and decisions (frames to send, a URL to fetch, how long to wait). Tests drive a venue
directly, without sockets.

How the loop drives a venue (`Venue`, one instance per ingest shard):

1. `plan()` gives the routes: one WebSocket each, its URL, the streams it carries, the
   frames to send right after the handshake (subscribe requests) and the keepalive ping.
2. Every data frame goes through `parser.parse(raw)`, which returns one event or raises
   `FeedError` (counted per kind, dead-lettered, never fatal):
   - `DepthDiff`: given to the symbol's `BookSync` (from `book_sync(symbol)`); on APPLY the
     book changed and a record is written; on RESYNC the book is flagged not exact, and the
     loop asks for a recovery (see 4).
   - `DepthSnapshot` from the stream (venues with an in-band snapshot): offered to the same
     `BookSync.on_snapshot`; EXACT means the book is exact at the snapshot itself.
   - `Trade`: one ring record, its `trade_id` a u64 that grows with the venue's trade order;
     `Trades`: several of them from one frame.
   - `BookTicker`: the venue's own top of book; ingest ignores it, tests compare against it.
   - `Ack`: a reply to a request sent on the route; `ok=False` is reported as a stream fault
     (name a subscribe request after its stream, as req_id, and the fault names the stream).
   - `Ticker`: some ticker fields (24 h statistics, funding, open interest), merged into
     the symbol's ticker state (`mdpipe.ingest.tickers`); `MarkPrice` also carries them.
   - `Alive`: a frame that proves the route delivers (pong, mark price); nothing to do.
   - `ServerShutdown`: the server announced it is going away; the loop replaces the
     connection make-before-break (`overlap_diff` / `overlap_trade` then de-duplicate).
3. A `BookSync` never touches a book: it classifies each diff (APPLY, BUFFERED, IGNORED,
   RESYNC) and each snapshot (`SnapshotStatus`), and says by `needs_recovery` that the loop
   must act. `mdpipe.venues.local_book.LocalBook` applies its verdicts to an OrderBook, then
   lets the machine check the result if it has a `verify` (a checksum).
4. Recovery: when `needs_recovery`, the loop calls `recovery(symbol)`: a URL to GET (REST
   snapshot; the body goes to `parse_snapshot`, a non-200 status to `rest_verdict`), or
   frames to send on the route carrying the symbol's depth (e.g. unsubscribe + subscribe).
5. `quiet_streams` tells which never-delivering streams are a quiet market, not a fault.

Adding a venue `<name>`: a package `mdpipe/venues/<name>/` with `spec.py` (MARKETS, the
default market first; DEFAULTS per market for the `[[feeds]]` keys; `check_symbol(symbol)`
and `check_feed(feed, shm_depth)` returning the problem, for config's one-line errors) and
`make_venue(feed, symbols)` in its `__init__` returning the `Venue` below; a simulator
module `mdpipe/sim/venues/<name>.py` with MARKETS and `build(cfg)`. Both are found by name.
Counters a venue's events need (`snapshot_resets`, `rest_<status>`) are registered on
first use; see `mdpipe.ingest.counters`.

Ids in book records: `first_update_id`, `last_update_id`, `prev_update_id` are the venue's
own ids as its package documents; `last_update_id` always grows with the book's state and
is what the venue's top-of-book stream is matched by.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, NamedTuple, Protocol

from mdpipe.instrument import Instrument
from mdpipe.venues.levels import Floats

# ---------------------------------------------------------------------------------------------
# Events: what a parser returns


@dataclass(slots=True)
class DepthDiff:
    """A depth update: absolute quantities for the changed levels (0 removes a level)."""

    symbol: str
    event_time: int  # ms
    transaction_time: int  # ms; 0 where the venue sends none
    first_id: int
    last_id: int
    prev_id: int  # -1 where the venue sends none
    bid_prices: Floats
    bid_qtys: Floats
    ask_prices: Floats
    ask_qtys: Floats
    check: Any = None  # what the sync's `verify` checks the book against (OKX: its checksum)


@dataclass(slots=True)
class DepthSnapshot:
    """The full book as of update id `last_update_id` (REST reply, or in-band from the stream)."""

    last_update_id: int
    bid_prices: Floats
    bid_qtys: Floats
    ask_prices: Floats
    ask_qtys: Floats
    event_time: int = 0  # ms
    transaction_time: int = 0  # ms
    symbol: str = ""  # set by in-band snapshots; REST replies are matched by request
    first_id: int = 0  # the venue's second id where it has one (e.g. Bybit `u`)
    check: Any = None  # what the sync's `verify` checks the book against (OKX: its checksum)


@dataclass(slots=True)
class Trade:
    """A trade or an aggregated trade; `buyer_is_maker` true means the aggressor sold."""

    symbol: str
    event_time: int  # ms
    trade_time: int  # ms
    trade_id: int  # u64, growing in the venue's trade order
    price: float
    qty: float
    buyer_is_maker: bool
    first_trade_id: int  # first trade of an aggregate, else trade_id
    last_trade_id: int  # last trade of an aggregate, else trade_id
    aggregated: bool
    order_type: str  # venue-specific detail (Binance futures `X`); "" otherwise


@dataclass(slots=True)
class Trades:
    """Several trades in one frame, in the venue's trade order."""

    trades: list[Trade]


@dataclass(slots=True)
class BookTicker:
    """The venue's own best bid and ask, tagged with the update id it matches."""

    symbol: str
    update_id: int
    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float
    event_time: int  # ms; 0 where the venue sends none
    transaction_time: int  # ms; 0 where the venue sends none


@dataclass(slots=True)
class MarkPrice:
    """A mark price, pushed on a schedule whether or not anything trades; `values` holds the
    ticker fields it carries (see `Ticker`)."""

    symbol: str
    event_time: int
    mark_price: float
    values: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Ticker:
    """Some ticker fields of one symbol as the venue sent them: `values` maps names of
    mdpipe.shm.layout.TICKER_VALUES to numbers (times in ns); absent names were not sent."""

    symbol: str
    event_time: int  # ms
    values: dict[str, float]
    snapshot: bool = False  # a full state (Bybit `snapshot`), not a delta


@dataclass(slots=True)
class ServerShutdown:
    """The server announced it is going away: replace the connection, then resync."""

    event_time: int


@dataclass(slots=True)
class Ack:
    """The venue's answer to a request sent on the route (subscribe, unsubscribe)."""

    req_id: str
    ok: bool
    message: str
    op: str


@dataclass(slots=True)
class Alive:
    """A frame with no market data that proves the route delivers (a pong)."""

    what: str


Event = (
    DepthDiff
    | DepthSnapshot
    | Trade
    | Trades
    | BookTicker
    | MarkPrice
    | Ticker
    | ServerShutdown
    | Ack
    | Alive
)

# Stream kinds of a route's streams: (SYMBOL, kind) -> the venue's stream name.
DEPTH, TRADE, MARK, TICKER = "depth", "trade", "mark", "ticker"
StreamKey = tuple[str, str]


# ---------------------------------------------------------------------------------------------
# Book synchronisation: the per-symbol rules


class Action(IntEnum):
    """What to do with one diff."""

    APPLY = 1  # apply it to the book now
    BUFFERED = 2  # kept until a snapshot arrives; do nothing
    IGNORED = 3  # stale (already contained in the book), or no book to apply it to: drop it
    RESYNC = 4  # gap or buffer overflow: the book is broken, recover it


class SnapshotStatus(Enum):
    """What an offered snapshot led to."""

    SYNCED = "synced"  # load the snapshot, apply `diffs` in order: the book is synced
    WAITING = "waiting"  # load the snapshot; the next diff decides (no buffered diff was newer)
    EXACT = "exact"  # load the snapshot: the book is exact as of the snapshot itself
    TOO_OLD = "too_old"  # older than the buffered stream: discard it, fetch another
    GAP = "gap"  # the buffered diffs have a hole: discard it, fetch another
    UNNEEDED = "unneeded"  # not waiting for a snapshot: discard it
    INVALID = "invalid"  # loaded, but the book fails the venue's own check (a checksum)


LOADS_SNAPSHOT = (SnapshotStatus.SYNCED, SnapshotStatus.WAITING, SnapshotStatus.EXACT)


class SnapshotResult(NamedTuple):
    """The outcome of `on_snapshot`: a status and the buffered diffs to apply after loading."""

    status: SnapshotStatus
    diffs: list[DepthDiff]


class BookSync(Protocol):
    """One symbol's sync rules (free of I/O): decides, never touches a book.

    On APPLY the machine may rewrite the diff's `prev_id` to the id the book was at, which
    the record then carries.
    """

    reason: str  # why the last RESYNC or refused snapshot happened
    resyncs: int

    @property
    def synced(self) -> bool:
        """True only while the book provably equals the venue's."""

    @property
    def needs_snapshot(self) -> bool:
        """True while there is no usable book (buffering, or waiting for an in-band snapshot)."""

    @property
    def needs_recovery(self) -> bool:
        """True when the loop must act (fetch a snapshot, resubscribe) for the book to sync."""

    @property
    def last_update_id(self) -> int:
        """The update id the book is at; -1 if none."""

    @property
    def buffered(self) -> int:
        """Diffs held while waiting for a snapshot."""

    def on_diff(self, diff: DepthDiff) -> Action:
        """Classify one diff; the caller applies it to the book only on APPLY."""

    def on_snapshot(self, snapshot: DepthSnapshot) -> SnapshotResult:
        """Reconcile a snapshot with the stream; see SnapshotStatus."""

    def covers(self, diff: DepthDiff) -> bool:
        """True when applying `diff` to the synced book gives exactly the book at its id."""

    def as_next(self, diff: DepthDiff) -> DepthDiff:
        """A diff the book `covers`, as the one that follows the book."""

    def reset(self) -> None:
        """Forget everything (the stream was interrupted)."""

    # Optional: `verify(event, book) -> Action`, called by LocalBook after a diff was applied
    # or a snapshot loaded (`book` is the mdpipe.book.OrderBook). APPLY when the book passes
    # the venue's own check (e.g. OKX's checksum), RESYNC after the machine marked itself
    # broken. Machines without it are not called.


# ---------------------------------------------------------------------------------------------
# The venue


class RoutePlan(NamedTuple):
    """One WebSocket connection to hold open."""

    name: str  # e.g. "public#0": logs and metrics
    url: str
    streams: dict[StreamKey, str]  # (SYMBOL, kind) -> the venue's stream or topic name
    subscribe: tuple[bytes, ...] = ()  # frames to send right after the handshake, in order
    ping: bytes = b""  # keepalive frame to send every ping_interval seconds (b"": none)
    ping_interval: float = 0.0
    send_rate: float = 0.0  # client messages per second the venue allows us (0: no limit)


class FetchSnapshot(NamedTuple):
    """Recovery by REST: GET this URL, hand the body to `parse_snapshot`."""

    url: str


class SendFrames(NamedTuple):
    """Recovery in-band: send these frames on the route that carries the symbol's depth."""

    frames: tuple[bytes, ...]


Recovery = FetchSnapshot | SendFrames


class RestVerdict(NamedTuple):
    """What to do after a refused or failed REST request."""

    counter: str  # counter to bump ("" for none)
    wait: float  # seconds before this symbol's next request
    blocked: bool  # a refusal by the venue (ban, rate limit, geo-block), not a failure
    level: int  # logging level of the message
    message: str  # "" to log nothing (e.g. repeated refusals)


class Parser(Protocol):
    """Turns one raw WebSocket message into an event, or raises FeedError."""

    def parse(self, raw: bytes) -> Event:
        """Parse one data frame."""


class RouteState(Protocol):
    """What the rollover rules see of a route's connection (`mdpipe.ingest.connection`)."""

    successor: Any  # on the old socket: the route it hands over to (None otherwise)
    retiring: Any  # on the new socket: the old one still delivering (None otherwise)
    settle_until: float  # after the old socket closed: its frames may still arrive until then
    caught_up: set[StreamKey]  # on the new socket: streams it has caught up on
    delivered: set[StreamKey]  # on the old socket: streams it delivered while both were open


class Venue(Protocol):
    """One ingest shard's protocol: routes, parser, per-symbol sync, recovery and rules."""

    name: str  # "binance", "bybit", "okx"
    market: str  # the venue's market of this feed, e.g. "futures", "linear", "swap"
    exchange: str  # the rings' header field: "<name>-<market>"
    parser: Parser

    def plan(self) -> list[RoutePlan]:
        """The routes to connect, with their streams, subscribe frames and keepalive."""

    def book_sync(self, symbol: str) -> BookSync:
        """A fresh sync machine for one symbol."""

    def instrument(self, symbol: str) -> Instrument:
        """The normalized instrument a symbol of this feed trades."""

    def recovery(self, symbol: str) -> Recovery:
        """How to rebuild a book whose sync `needs_recovery`."""

    def parse_snapshot(self, body: bytes) -> DepthSnapshot:
        """A REST snapshot body, or FeedError."""

    def rest_verdict(
        self, status: int, retry_after: float | None, backoff: float, streak: int, error: str
    ) -> RestVerdict:
        """What a non-200 reply means: how long to wait, what to count and log.

        `backoff` is the symbol's next backoff delay, `streak` its refusals so far; status 0
        means no HTTP answer at all, and `error` says why.
        """

    def quiet_streams(self, streams: Iterable[StreamKey], unseen: set[StreamKey]) -> set[StreamKey]:
        """Streams whose silence since connecting is a quiet market, not a fault."""

    def overlap_diff(
        self, route: RouteState, sync: BookSync, diff: DepthDiff
    ) -> tuple[DepthDiff | None, bool]:
        """During a make-before-break rollover: (the diff to give the book or None, duplicate)."""

    def overlap_trade(
        self, route: RouteState, last_trade_id: int, trade: Trade
    ) -> tuple[bool, bool]:
        """During a rollover: (commit this trade, it was a duplicate)."""


def default_rest_verdict(status: int, backoff: float, error: str) -> RestVerdict:
    """The policy for a failure the venue says nothing special about: back off and retry."""
    what = f"HTTP {status}" if status else error
    return RestVerdict(
        "rest_5xx" if status >= 500 else "",
        backoff,
        False,
        logging.WARNING,
        f"snapshot failed ({what}); retrying in {backoff:.2f} s",
    )
