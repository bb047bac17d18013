"""`candles()`: the candles of one symbol and interval still held in the candle rings."""

from __future__ import annotations

import numpy as np

from mdpipe.candles import parse_interval
from mdpipe.shm import layout as L
from mdpipe.shm.reader import attach


def candles(
    instance: str,
    symbol: str,
    interval: str = "1m",
    *,
    last: int | None = None,
    owner: int | str | None = None,
) -> np.ndarray:
    """The candles of `symbol` at `interval` ("1s", "1m", ...) still in the rings, oldest first.

    An array of mdpipe.shm.layout.CANDLE_DTYPE you own; a candle amended by a late trade
    appears once, at its newest revision. `symbol` is the venue's name ("BTCUSDT") or
    "<exchange>:<symbol>" where several venues list it. last: only the newest `last`.
    """
    parse_interval(interval)  # a clear ValueError for a bad interval
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise ValueError(f"last must be a count >= 1, got {last!r}")
    with attach(instance, f"candles_{interval}", kind="candle", owner=owner) as reader:
        names, qualified = reader.symbols, reader.qualified_symbols
        ids = [i for i, q in enumerate(qualified) if q == symbol]
        if not ids:
            ids = [i for i, s in enumerate(names) if s == symbol]
        if not ids:
            raise KeyError(f"{symbol!r} has no {interval} candles; symbols: {qualified}")
        if len({qualified[i].partition(":")[0] for i in ids}) > 1:
            options = sorted(qualified[i] for i in ids)
            raise KeyError(f"{symbol!r} is on several venues: name one of {options}")
        reader.seek_oldest()
        parts = []
        while True:
            batch = reader.read_batch(4096)
            if not len(batch):
                break
            parts.append(batch[np.isin(batch["symbol_id"], ids)])
    if not parts:
        return np.empty(0, L.CANDLE_DTYPE)
    recs = np.concatenate(parts)
    # The newest revision of each interval: the last record with that open time.
    _, keep = np.unique(recs["open_ts_ns"][::-1], return_index=True)
    out = recs[::-1][keep]
    return out if last is None else out[-last:]
