"""OKX tape replay: `<receive ns> <raw frame>` lines served byte for byte, books rebuilt from them.

A tape line is a push exactly as received (`{"arg":{"channel":..,"instId":..},...}`) or a
REST books answer (`{"code":"0",...}`, kept for the record; REST calls are answered from
the rebuilt book). The replay rebuilds each instrument's book from the tape's own `books`
messages and checks every non-zero checksum against it: a subscriber (a resubscribe after
a gap) gets a snapshot of that book only while the checksums hold. Where the tape itself
is inconsistent the simulator sends nothing it cannot vouch for; the tape's next recorded
snapshot restores the book.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mdpipe.sim.faults import FaultSchedule
from mdpipe.sim.hub import Hub
from mdpipe.sim.tape_file import TapeError, read_tape_lines
from mdpipe.sim.tape_player import TapePlayer
from mdpipe.sim.text_levels import best_first
from mdpipe.sim.venues._okx.market import stream
from mdpipe.sim.venues._okx.wire import books_push, rest_books
from mdpipe.venues.okx.checksum import CHECKSUM_LEVELS, book_checksum

_PUSH = b'{"arg":{"channel":"'
_REST = b'{"code":'


@dataclass(slots=True)
class Line:
    """One tape line: receive time, hub stream (None for a REST line), exact bytes, books data."""

    ns: int
    stream: str | None
    raw: bytes
    books: dict[str, Any] | None  # the parsed push of a `books` line, for the rebuilt book


@dataclass
class OkxTape:
    """A loaded tape."""

    path: Path
    lines: list[Line]
    streams: set[str]
    inst_ids: set[str]
    checksums: bool  # the books messages carry checksums (legacy data)


def load_okx_tape(path: Path) -> OkxTape:
    """Read and check a tape (gzip or plain)."""
    lines: list[Line] = []
    streams: set[str] = set()
    inst_ids: set[str] = set()
    checksums = False
    for number, ns, raw in read_tape_lines(path, "raw frame"):
        if raw.startswith(_REST):
            lines.append(Line(ns, None, raw, None))
            continue
        if not raw.startswith(_PUSH):
            raise TapeError(f"{path}:{number}: neither an OKX push nor a REST books answer")
        try:
            msg = orjson.loads(raw)
            arg = msg["arg"]
            name = stream(arg["channel"], arg["instId"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise TapeError(f"{path}:{number}: not a well-formed OKX push") from None
        books = None
        if arg["channel"] == "books":
            books = msg
            inst_ids.add(arg["instId"])
            checksums |= bool(msg["data"][0].get("checksum"))
        streams.add(name)
        lines.append(Line(ns, name, raw, books))
    if not lines:
        raise TapeError(f"{path}: empty tape")
    return OkxTape(path, lines, streams, inst_ids, checksums)


class TapeBook:
    """One instrument's book rebuilt from the tape, with the raw text of every level."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq: int | None = None
        self.ts = "0"
        self.valid = False  # a snapshot was seen and every checksum since has held
        self.mismatches = 0

    def apply(self, msg: dict[str, Any]) -> None:
        """Take one recorded books message."""
        d = msg["data"][0]
        if msg.get("action") == "snapshot":
            self.bids = {lv[0]: lv[1] for lv in d["bids"] if float(lv[1])}
            self.asks = {lv[0]: lv[1] for lv in d["asks"] if float(lv[1])}
            self.valid = True
        elif self.valid:
            for side, levels in ((self.bids, d["bids"]), (self.asks, d["asks"])):
                for px, sz, *_ in levels:
                    if float(sz):
                        side[px] = sz
                    else:
                        side.pop(px, None)
        self.seq = d.get("seqId", self.seq)
        self.ts = d.get("ts", self.ts)
        if self.valid and d.get("checksum") and self.checksum() != d["checksum"]:
            self.valid = False
            self.mismatches += 1

    def levels(self, limit: int) -> tuple[list[list[str]], list[list[str]]]:
        """Best-first (bids, asks) as OKX levels."""
        bids, asks = best_first(self.bids, self.asks, limit)
        return [[p, q, "0", "1"] for p, q in bids], [[p, q, "0", "1"] for p, q in asks]

    def checksum(self) -> int:
        """The checksum of the rebuilt book."""
        bids, asks = self.levels(CHECKSUM_LEVELS)
        return book_checksum([f"{p}:{q}" for p, q, *_ in bids], [f"{p}:{q}" for p, q, *_ in asks])


class OkxTapeSource(TapePlayer):
    """Replays a tape at `speed`× its recorded pace, or as fast as clients read (`max_speed`)."""

    def __init__(
        self,
        tape: OkxTape,
        hub: Hub,
        speed: float,
        max_speed: bool,
        loop_tape: bool,
        tick: float,
        schedule: FaultSchedule,
        on_due: Callable[[float], None],
    ) -> None:
        super().__init__(tape.lines, hub, speed, max_speed, loop_tape, tick, schedule, on_due)
        self.tape = tape
        self.symbols = set(tape.inst_ids) | {s.partition(":")[2] for s in tape.streams}
        self.books = {inst_id: TapeBook() for inst_id in tape.inst_ids}

    def snapshot(self, inst_id: str, now_ms: int) -> bytes | None:
        """A snapshot of the rebuilt book for a new subscriber; None while it is not vouched for."""
        book = self.books.get(inst_id)
        if book is None or not book.valid:
            return None
        bids, asks = book.levels(400)
        checksum = book.checksum() if self.tape.checksums else 0
        return books_push(inst_id, "snapshot", asks, bids, int(book.ts), checksum, -1, book.seq)

    def rest(self, inst_id: str, sz: int, now_ms: int) -> bytes | None:
        """The REST answer from the rebuilt book (None: not available)."""
        book = self.books.get(inst_id)
        if book is None or not book.valid or book.seq is None:
            return None
        bids, asks = book.levels(sz)
        return rest_books(asks, bids, int(book.ts), book.seq)

    def last_seq(self, inst_id: str) -> int:
        """The rebuilt book's seqId (0 if none)."""
        book = self.books.get(inst_id)
        return (book.seq or 0) if book else 0

    def _reset_books(self) -> None:
        self.books = {inst_id: TapeBook() for inst_id in self.tape.inst_ids}

    def _play_line(self, index: int) -> bool:
        line = self.tape.lines[index]
        if line.stream is None:
            return True
        if line.books is not None:
            inst_id = line.books["arg"]["instId"]
            self.books[inst_id].apply(line.books)
            if self._gapped(inst_id):
                return False
        self.hub.publish(line.stream, line.raw)
        return True

    def stats(self) -> dict[str, Any]:
        """Counters for /_sim/stats."""
        return {
            "started": self.started.is_set(),
            "tape": str(self.tape.path),
            "lines_total": len(self.tape.lines),
            "lines_replayed": self.position,
            "loops": self.loops,
            "finished": self.finished,
            "market_time_s": round(self._market_time, 3),
            "skipped_by_gap": self.skipped_by_gap,
            "books": {
                inst_id: {"seq_id": b.seq, "valid": b.valid, "checksum_mismatches": b.mismatches}
                for inst_id, b in self.books.items()
            },
        }
