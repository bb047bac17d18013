"""Synthetic OKX tapes: what a client subscribed to books, bbo-tbt and trades would record.

The simulator's own market is run on a simulated clock (no sockets, no sleeping) and every
push is written as a tape line `<receive ns> <raw frame>`, with a fresh snapshot every
`snapshot_every` seconds as a recorder that resubscribes periodically would have. Legacy
form (the default): non-zero checksums and some updates without seqId/prevSeqId, as OKX
data recorded before 2026 looks.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from mdpipe.sim.faults import FaultSchedule
from mdpipe.sim.venues._okx.market import OkxMarket, stream
from mdpipe.sim.venues._okx.wire import okx_instrument

CHANNELS = ("books", "bbo-tbt", "trades")
RECEIVE_LAG_NS = 1_200_000  # the recorder received each push this long after its ts
START_MS = 1_754_611_200_000  # 2025-08-08 00:00:00 UTC: before OKX set checksums to 0


class TapeSink:
    """Takes the market's pushes (the hub's publishing interface) as tape lines."""

    def __init__(self, streams: set[str]) -> None:
        self.streams = streams
        self.lines: list[bytes] = []
        self.now_ns = 0

    def wants(self, name: str) -> bool:
        return name in self.streams

    def publish(self, name: str, payload: bytes, wrapped: bytes | None = None) -> None:
        if name in self.streams:
            self.lines.append(b"%d %s" % (self.now_ns, payload))

    def flush(self) -> None:
        """Nothing is buffered."""


def synthetic_tape(
    inst_ids: list[str],
    seconds: float,
    rate: float = 150.0,
    seed: int = 1,
    levels: int = 400,
    books_ms: int = 100,
    legacy: bool = True,
    snapshot_every: float = 10.0,
    tick: float = 0.001,
) -> list[bytes]:
    """The tape lines of `seconds` of the synthetic market for these instruments."""
    instruments = [okx_instrument(i, seed) for i in inst_ids]
    sink = TapeSink({stream(ch, i) for ch in CHANNELS for i in inst_ids})
    market = OkxMarket(
        instruments,
        sink,  # type: ignore[arg-type]
        seed,
        levels,
        rate,
        books_ms,
        legacy,
        60.0,
        tick,
        FaultSchedule([]),
        lambda _t: None,
    )
    market.begin(0.0)
    next_snapshot = 0.0
    steps = int(seconds / tick)
    for k in range(steps + 1):
        now = k * tick
        now_ms = START_MS + int(now * 1000)
        sink.now_ns = now_ms * 1_000_000 + RECEIVE_LAG_NS
        if now >= next_snapshot:
            for inst_id in inst_ids:
                snap = market.snapshot(inst_id, now_ms, now)
                sink.lines.append(b"%d %s" % (sink.now_ns, snap))
            next_snapshot += snapshot_every
        market.advance(now, now_ms)
    return sink.lines


def write_tape(path: Path, lines: list[bytes]) -> None:
    """Write tape lines, gzipped when the name ends in .gz (reproducible: no mtime)."""
    data = b"\n".join(lines) + b"\n"
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(data)
    else:
        path.write_bytes(data)


def book_frames(
    inst_id: str = "BTC-USDT-SWAP",
    pushes: int = 2000,
    steps_per_push: int = 60,
    legacy: bool = False,
    seed: int = 1,
) -> tuple[bytes, list[bytes]]:
    """(the in-band snapshot, the next `pushes` books updates) of one instrument, each update
    aggregating `steps_per_push` engine steps (for benchmarks: a comparable synthetic book)."""
    books_ms = 100
    rate = steps_per_push * 1000 / books_ms
    sink = TapeSink({stream("books", inst_id)})
    market = OkxMarket(
        [okx_instrument(inst_id, seed)],
        sink,  # type: ignore[arg-type]
        seed,
        400,
        rate,
        books_ms,
        legacy,
        0.0,
        0.01,
        FaultSchedule([]),
        lambda _t: None,
    )
    market.begin(0.0)
    snapshot = market.snapshot(inst_id, START_MS, 0.0)
    now = 0.0
    while len(sink.lines) < pushes:
        now += books_ms / 1000
        market.advance(now, START_MS + int(now * 1000))
    return snapshot, [line.partition(b" ")[2] for line in sink.lines[:pushes]]
