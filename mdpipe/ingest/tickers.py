"""The ticker ring's writer side: each symbol's merged ticker state, one record per update.

A venue message carries some of the ticker fields (Binance's mark price stream: mark,
index, funding; its 24 h ticker: the statistics; Bybit's deltas: whatever changed). Each
is merged into the symbol's last full state, and the whole state is committed: a record
is always the venue's latest view of every field it ever sent. `updated` names the fields
of this message, `filled` every field the venue has sent; the others stay NaN.
"""

from __future__ import annotations

import math

import numpy as np

from mdpipe.shm import layout as L
from mdpipe.shm.writer import RingWriter
from mdpipe.venues.base import Ticker

_MS = 1_000_000
_BITS = L.TICKER_BITS
_TIMES = {"next_funding_ts_ns"}
_FUNDING = _BITS["mark_price"] | _BITS["funding_rate"] | _BITS["next_funding_ts_ns"]


class TickerState:
    """Per-symbol merged ticker state of one ingest shard, committed into its ticker ring."""

    def __init__(self, writer: RingWriter, n_symbols: int) -> None:
        self.w = writer
        self.state = np.zeros(n_symbols, L.TICKER_DTYPE)
        for name, _, _ in L.TICKER_VALUES:
            if name not in _TIMES:
                self.state[name] = math.nan
        self.state["symbol_id"] = np.arange(n_symbols)
        self.seen = [False] * n_symbols
        self.last_update_ns = [0] * n_symbols  # local receive time, for staleness checks
        self.last_funding_ns = [0] * n_symbols  # ... of a message with mark price or funding

    def apply(self, sid: int, ev: Ticker, recv_ns: int) -> None:
        """Merge one venue message into the symbol's state and commit the state."""
        rec = self.state[sid]
        bits = 0
        for name, value in ev.values.items():
            rec[name] = value
            bits |= _BITS[name]
        rec["updated"] = bits
        rec["filled"] |= bits
        rec["exchange_ts_ns"] = ev.event_time * _MS
        rec["recv_ts_ns"] = recv_ns
        rec["flags"] = 0 if self.seen[sid] else L.FLAG_RESYNC
        self.seen[sid] = True
        self.last_update_ns[sid] = recv_ns
        if bits & _FUNDING:
            self.last_funding_ns[sid] = recv_ns
        self.w.staging[0] = rec
        self.w.commit(sid)
