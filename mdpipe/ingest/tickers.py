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


def _word(name: str) -> int:
    """The index of an 8-byte field in a record seen as 8-byte words."""
    return L.TICKER_DTYPE.fields[name][1] // 8


_SLOT = {name: (_word(name), _BITS[name], name in _TIMES) for name, _, _ in L.TICKER_VALUES}
_EXCHANGE_TS, _RECV_TS = _word("exchange_ts_ns"), _word("recv_ts_ns")
_FILLED, _UPDATED = _word("filled"), _word("updated")
_FLAGS32 = L.TICKER_DTYPE.fields["flags"][1] // 4


class TickerState:
    """Per-symbol merged ticker state of one ingest shard, committed into its ticker ring.

    The states are one numpy array written through 8-byte word views (a field assignment on
    a structured record costs about 20 times more), and a record is committed by copying
    the symbol's bytes into the writer's staging record.
    """

    def __init__(self, writer: RingWriter, n_symbols: int) -> None:
        self.w = writer
        self.state = np.zeros(n_symbols, L.TICKER_DTYPE)
        for name, _, _ in L.TICKER_VALUES:
            if name not in _TIMES:
                self.state[name] = math.nan
        self.state["symbol_id"] = np.arange(n_symbols)
        raw = self.state.view(np.uint8).reshape(n_symbols, L.TICKER_DTYPE.itemsize)
        self._raw = raw
        self._u64 = raw.view(np.uint64)
        self._i64 = raw.view(np.int64)
        self._f64 = raw.view(np.float64)
        self._u32 = raw.view(np.uint32)
        self._stage = writer.staging.view(np.uint8)
        self.seen = [False] * n_symbols
        self.last_update_ns = [0] * n_symbols  # local receive time, for staleness checks
        self.last_funding_ns = [0] * n_symbols  # ... of a message with mark price or funding

    def apply(self, sid: int, ev: Ticker, recv_ns: int) -> None:
        """Merge one venue message into the symbol's state and commit the state."""
        f64, i64, u64 = self._f64[sid], self._i64[sid], self._u64[sid]
        bits = 0
        for name, value in ev.values.items():
            word, bit, is_time = _SLOT[name]
            if is_time:
                i64[word] = value
            else:
                f64[word] = value
            bits |= bit
        u64[_UPDATED] = bits
        u64[_FILLED] = int(u64[_FILLED]) | bits
        i64[_EXCHANGE_TS] = ev.event_time * _MS
        i64[_RECV_TS] = recv_ns
        self._u32[sid, _FLAGS32] = 0 if self.seen[sid] else L.FLAG_RESYNC
        self.seen[sid] = True
        self.last_update_ns[sid] = recv_ns
        if bits & _FUNDING:
            self.last_funding_ns[sid] = recv_ns
        self._stage[:] = self._raw[sid]
        self.w.commit(sid)
