"""The publisher's status segment: counter names, ring cursors, a predecessor's totals."""

from __future__ import annotations

import re

import posix_ipc

from mdpipe.counters import PUBLISHER
from mdpipe.readers import LayoutError
from mdpipe.shm.segment import read_status

COUNTERS = PUBLISHER.names  # declared with their meanings in mdpipe/counters.py
(
    BOOKS_PUBLISHED,
    TRADES_PUBLISHED,
    MD_PUBLISHED,
    BOOKS_CONFLATED,
    TRADES_LOST,
    BOOKS_LOST,
    DROPPED_BOOKS,
    DROPPED_TRADES,
    REDIS_ERRORS,
    REDIS_RECONNECTS,
    BOOKS_REPUBLISHED,
    G_REDIS_UP,
    G_LAG_RECORDS,
    G_LAG_NS,
    G_RINGS,
    STREAM_ENTRIES,
    FUNDING_PUBLISHED,
    CANDLES_PUBLISHED,
    TICKERS_LOST,
) = range(len(COUNTERS))

CURSOR = "g_cursor_"  # + ring key: the next record of that ring the publisher reads


def ring_key(ring: str) -> str:
    """A ring name as it appears in counter names (books.sim.0 -> books_sim_0)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", ring)


def previous_counters(instance: str) -> dict[str, int]:
    """The counters of the instance's previous publisher (its ring cursors among them), if gone."""
    try:
        st = read_status(instance, "publisher")
    except (posix_ipc.ExistentialError, LayoutError, PermissionError):
        return {}
    if st.writer_alive:
        return {}  # creating our status segment will refuse to start
    return st.counters
