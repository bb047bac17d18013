"""Runtime subscriptions of an ingest shard: add or remove symbols on its live connections.

A symbol added gets its streams by SUBSCRIBE messages on the existing connections (paced
like every client message), a row in both rings' symbol tables (readers attached before
see it on their next lookup) and a fresh book that syncs from a REST snapshot like any
other. A symbol removed is unsubscribed, its book is marked not exact (one record with
flags 0) and its id is kept: ids are never renumbered, and subscribing it again reuses it.
Nothing else changes: every other book keeps its sequence and stays synced.

Changes last as long as the shard process: a restart comes back with the config's symbols.
"""

from __future__ import annotations

import http.client
import time
from typing import TYPE_CHECKING, Any

import orjson

from mdpipe.ingest.connection import Connection
from mdpipe.ingest.rest import HttpGetter
from mdpipe.venues import venue_spec
from mdpipe.venues.base import DEPTH, RoutePlan
from mdpipe.venues.errors import FeedError

if TYPE_CHECKING:
    from mdpipe.ingest.shard import Shard

PROBE_TIMEOUT = 10.0


class Refused(Exception):
    """A request that cannot be applied as a whole: nothing was changed."""


def probe_symbols(venue: Any, symbols: list[str]) -> tuple[str, bool] | None:
    """(why the exchange will not serve one of `symbols`, whether the input is at fault), or
    None when it serves them all: the form first, then one listing request (exchangeInfo)."""
    if not symbols:
        return "no symbols given", True
    spec = venue_spec(venue.name)
    for sym in symbols:
        problem = spec.check_symbol(sym)
        if problem:
            return problem, True
    getter = HttpGetter(PROBE_TIMEOUT)
    url = venue.listing_url()
    try:
        status, body, _ = getter.get(url)
    except (OSError, http.client.HTTPException) as exc:
        return f"cannot ask the exchange which symbols it lists: {exc}", False
    finally:
        getter.close()
    if status != 200:
        return (
            f"cannot ask the exchange which symbols it lists: HTTP {status}: {_message(body)}",
            False,
        )
    try:
        listed = venue.listed(body)
    except FeedError as exc:
        return f"cannot read the exchange's symbol list: {exc.detail}", False
    unlisted = [s for s in symbols if s not in listed]
    if unlisted:
        return f"the exchange does not list {', '.join(unlisted)}", True
    return None


def _message(body: bytes) -> str:
    try:
        msg = orjson.loads(body).get("msg")
    except (orjson.JSONDecodeError, AttributeError):
        msg = None
    return str(msg) if msg else body[:200].decode("utf-8", "replace")


def _route_with_room(shard: Shard, group: str, wanted: int) -> Connection:
    """The first connection of a route group with room for `wanted` more streams."""
    limit = shard.venue.max_streams
    for conn in shard.conns:
        if conn.name.partition("#")[0] == group and len(conn.streams) + wanted <= limit:
            return conn
    raise Refused(
        f"venue limit reached: every {group} connection of this shard already carries "
        f"{limit} streams or close to it; add a shard (cores) to the feed in the config"
    )


def subscribe(shard: Shard, symbols: list[str]) -> list[str]:
    """Add symbols to a running shard (all or none); returns them."""
    symbols = list(dict.fromkeys(symbols))
    have = [s for s in symbols if s in shard.books]
    if have:
        raise Refused(f"already subscribed: {', '.join(have)}")
    plans: list[tuple[str, dict[tuple[str, str], str], Connection]] = []
    wanted: dict[str, int] = {}
    for sym in symbols:
        for group, streams in shard.venue.symbol_streams(sym).items():
            wanted[group] = wanted.get(group, 0) + len(streams)
    routes = {group: _route_with_room(shard, group, n) for group, n in wanted.items()}
    new_rows = [s for s in symbols if s not in shard.books_w.symbols]
    room = shard.books_w.max_symbols - len(shard.books_w.symbols)
    if len(new_rows) > room:
        raise Refused(
            f"the rings hold {shard.books_w.max_symbols} symbols and have room for {room} more"
        )
    for sym in symbols:
        for group, streams in shard.venue.symbol_streams(sym).items():
            plans.append((sym, streams, routes[group]))
    for sym in symbols:
        _add_rows(shard, sym)
    now = time.monotonic()
    sent: dict[str, list[str]] = {}
    for sym, streams, conn in plans:
        # Not added to the connection's `unseen`: its silence check counts from the
        # connection's start, long past; a book that never gets data stays unsynced instead.
        conn.streams.update(streams)
        if any(kind == DEPTH for _, kind in streams):
            conn.depth_symbols.append(sym)
            shard.depth_route[sym] = conn
        sent.setdefault(conn.name, []).extend(streams.values())
    for name, names in sent.items():
        conn = shard.by_name[name]
        if conn.up:
            shard._queue(conn, shard.venue.request_frames(True, names))
            shard._flush(conn, now)
    shard.ctr.arr[shard.ctr.g_books_total] = len(shard.books)
    shard.ctr.arr[shard.ctr.subscribed] += len(symbols)
    shard.log.info("subscribed at runtime: %s", ", ".join(symbols))
    return symbols


def _add_rows(shard: Shard, sym: str) -> None:
    """Register a symbol in both rings (or find its old rows) and give it a book."""
    try:
        inst = shard.venue.instrument(sym)
    except ValueError:
        inst = None
    sid = shard.books_w.add_symbol(sym, inst)
    tid = shard.trades_w.add_symbol(sym, inst)
    shard.venue.add_symbol(sym)
    shard.books[sym] = shard.new_book(sym, sid)
    shard.trade_ids[sym] = tid
    while len(shard.last_trade_id) <= tid:
        shard.last_trade_id.append(0)
    shard.removed.discard(sym)


def unsubscribe(shard: Shard, symbols: list[str]) -> list[str]:
    """Remove symbols from a running shard (all or none): unsubscribe, unpublish their books."""
    symbols = list(dict.fromkeys(symbols))
    missing = [s for s in symbols if s not in shard.books]
    if missing:
        raise Refused(f"not subscribed on this shard: {', '.join(missing)}")
    now, now_ns = time.monotonic(), time.time_ns()
    gone = set(symbols)
    for conn in shard.conns:
        names = [name for (sym, _), name in conn.streams.items() if sym in gone]
        if not names:
            continue
        for key in [k for k in conn.streams if k[0] in gone]:
            del conn.streams[key]
            conn.unseen.discard(key)
            conn.faulted.discard(key)
        conn.depth_symbols[:] = [s for s in conn.depth_symbols if s not in gone]
        if conn.up:
            shard._queue(conn, shard.venue.request_frames(False, names))
            shard._flush(conn, now)
    for sym in symbols:
        book = shard.books.pop(sym)
        book.invalidate(now_ns)  # one record with flags 0: readers see the book is not exact
        shard.trade_ids.pop(sym)
        shard.depth_route.pop(sym, None)
        shard.removed.add(sym)
    shard.ctr.arr[shard.ctr.g_books_total] = len(shard.books)
    shard.ctr.arr[shard.ctr.unsubscribed] += len(symbols)
    shard.log.info("unsubscribed at runtime: %s", ", ".join(symbols))
    return symbols


def resubscribe_frames(venue: Any, plan: RoutePlan, conn: Connection) -> tuple[bytes, ...]:
    """After a reconnect: the requests that turn the planned streams into the current ones."""
    if not hasattr(venue, "request_frames"):
        return ()
    planned = set(plan.streams.values())
    current = set(conn.streams.values())
    frames = venue.request_frames(True, sorted(current - planned)) if current - planned else ()
    if planned - current:
        frames += venue.request_frames(False, sorted(planned - current))
    return frames
