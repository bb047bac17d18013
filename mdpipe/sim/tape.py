"""Tape replay: load a recorded tape, serve its bytes at pace, rebuild REST snapshots from it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mdpipe.sim.faults import FaultSchedule
from mdpipe.sim.hub import Hub
from mdpipe.sim.instruments import FUTURES, SPOT
from mdpipe.sim.source import SnapshotUnavailable, Source
from mdpipe.sim.tape_file import TapeError, read_tape_lines
from mdpipe.sim.tape_player import TapePlayer
from mdpipe.sim.text_levels import best_first

_PREFIX = b'{"stream":"'
_DIFF_STREAM = re.compile(r"^[a-z0-9_]+@depth(@\d+ms)?$")


@dataclass(slots=True)
class TapeLine:
    """One recorded message: receive time, stream (None for the REST snapshot), exact bytes."""

    ns: int
    stream: str | None
    raw: bytes
    data_at: int  # offset of the payload inside raw (envelope lines)


@dataclass
class Tape:
    """A loaded tape and what was learned from it."""

    path: Path
    lines: list[TapeLine]
    market: str
    streams: set[str]
    diff_streams: dict[str, str]  # symbol -> the stream whose diffs build its book
    snapshot_symbol: str | None  # the first snapshot's symbol
    snapshot_symbols: dict[int, str] = field(default_factory=dict)  # snapshot line -> symbol


def _is_zero(qty: str) -> bool:
    return not qty.strip("0.")


def load_tape(path: Path, market: str | None = None) -> Tape:
    """Read a `<recv ns> <json>` tape (gzip or plain), detecting the market if not given."""
    lines: list[TapeLine] = []
    streams: set[str] = set()
    diff_streams: dict[str, str] = {}
    first_diff: dict[str, Any] | None = None
    snapshots: list[tuple[int, dict[str, Any]]] = []
    for number, ns, raw in read_tape_lines(path, "json"):
        if raw.startswith(_PREFIX):
            end = raw.index(b'"', len(_PREFIX))
            stream = raw[len(_PREFIX) : end].decode()
            data_at = end + len(b'","data":')
            if raw[end:data_at] != b'","data":' or not raw.endswith(b"}"):
                raise TapeError(f"{path}:{number}: not a compact combined-stream envelope")
            streams.add(stream)
            symbol = stream.partition("@")[0].upper()
            is_book_diff = (
                _DIFF_STREAM.match(stream) and diff_streams.setdefault(symbol, stream) == stream
            )
            if is_book_diff and first_diff is None:
                first_diff = orjson.loads(raw[data_at:-1])
            lines.append(TapeLine(ns, stream, raw, data_at))
        elif raw.startswith(b'{"lastUpdateId"'):
            # One per symbol (or more, after a resync) in a recorded multi-symbol tape.
            snapshots.append((len(lines), orjson.loads(raw)))
            lines.append(TapeLine(ns, None, raw, 0))
        else:
            raise TapeError(f"{path}:{number}: neither an envelope nor a depth snapshot")
    if not lines:
        raise TapeError(f"{path}: empty tape")
    if market is None:
        if first_diff is None:
            raise TapeError(f"{path}: no depth diffs to detect the market from; pass --market")
        market = FUTURES if "pu" in first_diff else SPOT
    owners = {
        at: sym
        for at, snap in snapshots
        if (sym := _snapshot_symbol(lines, diff_streams, snap)) is not None
    }
    first = owners[snapshots[0][0]] if snapshots and snapshots[0][0] in owners else None
    return Tape(path, lines, market, streams, diff_streams, first, owners)


def _snapshot_symbol(
    lines: list[TapeLine], diff_streams: dict[str, str], snapshot: dict[str, Any] | None
) -> str | None:
    """Which symbol the (symbol-less) snapshot line belongs to."""
    if snapshot is None or not diff_streams:
        return None
    if len(diff_streams) == 1:
        return next(iter(diff_streams))
    # Several books on one tape: the snapshot's id falls inside one symbol's diff ids.
    last_id = snapshot["lastUpdateId"]
    by_stream = {stream: sym for sym, stream in diff_streams.items()}
    for line in lines:
        if line.stream in by_stream:
            d = orjson.loads(line.raw[line.data_at : -1])
            if d["U"] <= last_id + 1 and d["u"] >= last_id:
                return by_stream[line.stream]
    return None


class TapeBook:
    """The exchange's book for one symbol, rebuilt from the tape by the documented sync rules."""

    def __init__(self, market: str) -> None:
        self.futures = market == FUTURES
        self.reset()

    def reset(self) -> None:
        """Forget everything (the tape starts over)."""
        self.ready = asyncio.Event()
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.last_id = 0
        self.event_ms = 0
        self.trans_ms = 0
        self.buffered: list[dict[str, Any]] = []
        self.recorded: bytes | None = None
        self.recorded_levels = 0
        self.applied_since_snapshot = 0
        self.sync_errors = 0

    def on_diff(self, diff: dict[str, Any]) -> None:
        """Buffer a diff before the snapshot, apply it after."""
        if not self.ready.is_set():
            self.buffered.append(diff)
        else:
            self._apply(diff)

    def on_snapshot(self, raw: bytes) -> None:
        """Take the recorded snapshot, then apply the buffered diffs that follow it."""
        snap = orjson.loads(raw)
        self.recorded = raw
        self.last_id = snap["lastUpdateId"]
        self.event_ms = snap.get("E", 0)
        self.trans_ms = snap.get("T", 0)
        self.bids = {p: q for p, q in snap["bids"]}
        self.asks = {p: q for p, q in snap["asks"]}
        self.recorded_levels = max(len(self.bids), len(self.asks))
        self.applied_since_snapshot = 0
        buffered, self.buffered = self.buffered, []
        self.ready.set()
        for diff in buffered:
            self._apply(diff)

    def _apply(self, d: dict[str, Any]) -> None:
        last = self.last_id
        if self.futures:
            if d["u"] < last:
                return
            # The first diff after the snapshot must straddle it; then each continues the last.
            ok = d["U"] <= last <= d["u"] if self.applied_since_snapshot == 0 else d["pu"] == last
        else:
            if d["u"] <= last:
                return
            ok = d["U"] <= last + 1 <= d["u"]
        if not ok:
            # The recording itself broke continuity; keep going, but say so in stats.
            self.sync_errors += 1
        for price, qty in d["b"]:
            if _is_zero(qty):
                self.bids.pop(price, None)
            else:
                self.bids[price] = qty
        for price, qty in d["a"]:
            if _is_zero(qty):
                self.asks.pop(price, None)
            else:
                self.asks[price] = qty
        self.last_id = d["u"]
        self.event_ms = d.get("E", self.event_ms)
        self.trans_ms = d.get("T", self.event_ms)
        self.applied_since_snapshot += 1

    def render(self, limit: int) -> bytes:
        """The REST answer: the recorded bytes while nothing changed since, else the rebuilt book."""
        if self.applied_since_snapshot == 0 and self.recorded and limit >= self.recorded_levels:
            return self.recorded
        bids, asks = best_first(self.bids, self.asks, limit)
        bid_levels = [[p, q] for p, q in bids]
        ask_levels = [[p, q] for p, q in asks]
        if self.futures:
            return orjson.dumps(
                {
                    "lastUpdateId": self.last_id,
                    "E": self.event_ms,
                    "T": self.trans_ms,
                    "bids": bid_levels,
                    "asks": ask_levels,
                }
            )
        return orjson.dumps({"lastUpdateId": self.last_id, "bids": bid_levels, "asks": ask_levels})


class TapeSource(TapePlayer, Source):
    """Replays a tape's exact bytes at `speed`× recorded pace, or as fast as clients read."""

    def __init__(
        self,
        tape: Tape,
        hub: Hub,
        speed: float,
        max_speed: bool,
        loop_tape: bool,
        rest_wait: float,
        tick: float,
        schedule: FaultSchedule,
        on_due: Callable[[float], None],
    ) -> None:
        super().__init__(tape.lines, hub, speed, max_speed, loop_tape, tick, schedule, on_due)
        self.tape = tape
        self.market = tape.market
        self.symbols = set(tape.diff_streams) | {s.partition("@")[0].upper() for s in tape.streams}
        self.rest_wait = rest_wait
        self.books = {sym: TapeBook(self.market) for sym in self.symbols}
        self._diff_stream_symbol = {stream: sym for sym, stream in tape.diff_streams.items()}

    def deliverable(self, stream: str) -> bool:
        return stream in self.tape.streams

    def _reset_books(self) -> None:
        for book in self.books.values():
            book.reset()

    def _play_line(self, index: int) -> bool:
        line = self.tape.lines[index]
        stream = line.stream
        if stream is None:
            owner = self.tape.snapshot_symbols.get(index)
            if owner is not None:
                self.books[owner].on_snapshot(line.raw)
            return True
        symbol = self._diff_stream_symbol.get(stream)
        if symbol is not None:
            self.books[symbol].on_diff(orjson.loads(line.raw[line.data_at : -1]))
            if self._gapped(symbol):
                return False
        self.hub.publish(stream, line.raw[line.data_at : -1], line.raw)
        return True

    async def snapshot(self, symbol: str, limit: int) -> bytes:
        book = self.books[symbol]
        if symbol not in self.tape.snapshot_symbols.values():
            raise SnapshotUnavailable(f"the tape has no snapshot for {symbol}")
        if not book.ready.is_set():
            # Like a slow REST call: answer once the replay reaches the recorded snapshot.
            try:
                await asyncio.wait_for(book.ready.wait(), self.rest_wait)
            except TimeoutError:
                raise SnapshotUnavailable("the tape's snapshot has not been reached yet") from None
        return book.render(limit)

    def last_update_id(self, symbol: str) -> int:
        return self.books[symbol].last_id if symbol in self.books else 0

    def stats(self) -> dict[str, Any]:
        return {
            "started": self.started.is_set(),
            "tape": str(self.tape.path),
            "lines_total": len(self.tape.lines),
            "lines_replayed": self.replayed,
            "position": self.position,
            "loops": self.loops,
            "finished": self.finished,
            "market_time_s": round(self._market_time, 3),
            "skipped_by_gap": self.skipped_by_gap,
            "books": {
                sym: {
                    "snapshot_reached": book.ready.is_set(),
                    "last_update_id": book.last_id,
                    "sync_errors": book.sync_errors,
                }
                for sym, book in self.books.items()
            },
        }
