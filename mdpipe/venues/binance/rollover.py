"""Binance's de-duplication while two sockets carry the same streams (a make-before-break
rollover, after the 24-hour cut or a serverShutdown): pure functions over route state."""

from __future__ import annotations

from mdpipe.venues.base import DEPTH, TRADE, BookSync, DepthDiff, RouteState, Trade


def _rolling(route: RouteState) -> bool:
    return route.successor is not None or route.retiring is not None or bool(route.settle_until)


def overlap_diff(route: RouteState, sync: BookSync, d: DepthDiff) -> tuple[DepthDiff | None, bool]:
    """During a rollover, (the diff to give the book or None to drop it, it was a duplicate).

    Both sockets deliver the symbol's stream, possibly cut into different diffs. A diff
    the book already has is dropped; one that covers the book's update id is applied
    (as the next diff), from whichever socket has it first. The new socket's diffs that
    are ahead of the book are dropped: the old one delivers what lies in between, and the
    old one's are left to the usual rules (a real gap resyncs). For a while after the old
    socket closed, the new one's diffs still get the first two rules.
    """
    if not _rolling(route):
        return d, False
    key = (d.symbol, DEPTH)
    if sync.synced:
        if d.last_id <= sync.last_update_id:
            if route.retiring is not None:
                route.caught_up.add(key)
            return None, True
        if sync.covers(d):
            if route.retiring is not None:
                route.caught_up.add(key)
            elif route.successor is not None and route.successor.up:
                route.delivered.add(key)
            return sync.as_next(d), False
    if route.retiring is not None:
        return None, False  # the new socket, ahead of the book or while the old one rebuilds it
    return d, False  # the old socket, or a route whose old socket closed: a gap, or a rebuild


def overlap_trade(route: RouteState, last: int, t: Trade) -> tuple[bool, bool]:
    """During a rollover, (commit the trade, it was a duplicate): each trade once, in id order
    (the same rule as diffs); `last` is the symbol's last committed trade id."""
    if not _rolling(route):
        return True, False
    key = (t.symbol, TRADE)
    if t.trade_id <= last:
        if route.retiring is not None:
            route.caught_up.add(key)
        return False, True
    if route.successor is not None:
        if route.successor.up:
            route.delivered.add(key)
        return True, False
    if route.retiring is None:
        return True, False  # the old socket closed: what is not a duplicate is new
    if last and t.trade_id == last + 1:
        route.caught_up.add(key)
        return True, False
    return False, False
