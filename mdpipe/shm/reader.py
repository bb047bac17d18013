"""Reading mdpipe rings from any local process: `attach()` and the Reader it returns.

A Reader composes, per ring it reads, a MappedRing (the read-only mapping), a StreamCursor
(ordered reads with exact loss counting), a LatestView (each symbol's newest record) and a
WriterFollower (writer restarts). Readers never write to a segment, so any number of them
cannot slow or corrupt the writer. A reader the writer laps skips ahead and `Reader.lost`
says exactly how many records it missed.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterator

import numpy as np

from mdpipe.instrument import Instrument
from mdpipe.shm import layout as L
from mdpipe.shm import seqlock
from mdpipe.shm.conflated import LatestView, TopRead
from mdpipe.shm.follow import WriterFollower
from mdpipe.shm.mapped import MappedRing
from mdpipe.shm.segment import (
    LayoutError,
    SegmentMissing,
    SegmentNotReady,
    check_names,
    list_segments,
    refused_segments,
    resolve_owner,
    shm_path,
)
from mdpipe.shm.stream import EMPTY, StreamCursor

__all__ = [
    "attach",
    "Reader",
    "NoSuchRingError",
    "LayoutError",
    "WriterGoneError",
    "ReaderClosedError",
    "list_instances",
]

# How often an idle reader looks at its writers (one load each; /proc at most twice a second).
_CHECK_NS = 100_000_000
# Pause instructions a spinning reader spends in C per call before it looks at the clock.
_SPINS = 512


class NoSuchRingError(LookupError):
    """The instance or ring does not exist (the message lists what does)."""


class WriterGoneError(RuntimeError):
    """The writer died and did not come back within the reader's patience."""


class ReaderClosedError(ValueError):
    """The reader was closed: its records and views are gone."""


def list_instances(owner: int | str | None = None) -> dict[str, list[str]]:
    """Every instance with trusted segments in /dev/shm, and its segments."""
    found: dict[str, list[str]] = {}
    for inst, ring in list_segments(owner=owner):
        found.setdefault(inst, []).append(ring)
    return found


def _describe_instances(owner: int | str | None) -> str:
    found = list_instances(owner)
    if not found:
        return "no mdpipe instance is running (start one with `mdpipe start`)"
    parts = [f"{inst} ({', '.join(rings)})" for inst, rings in sorted(found.items())]
    return "running instances: " + "; ".join(parts)


class _Part:
    """One ring of a Reader: its mapping and the reader's cursor, view and follower on it."""

    def __init__(self, ring: MappedRing, symbol_base: int) -> None:
        self.ring = ring
        self.cursor = StreamCursor(ring, symbol_base)
        self.view = LatestView(ring)
        self.follower = WriterFollower(ring)

    def release(self) -> None:
        self.cursor.release()
        self.view.release()

    def follow_new_segment(self) -> int:
        """Re-map a segment the writer replaced and go on from the new segment's oldest record.

        Returns the records this reader can no longer read: any left unread in the old
        segment, and any the new writer already overwrote.
        """
        unread = self.cursor.backlog()
        base = self.cursor.symbol_base
        self.release()
        self.ring.remap()
        self.cursor = StreamCursor(self.ring, base)
        self.cursor.next = self.ring.oldest()
        self.view = LatestView(self.ring)
        self.follower.replaced_by_new_segment()
        return unread + self.cursor.next


class _DeadWatch:
    """Raises WriterGoneError when a reader's writers stay gone for `dead_timeout` seconds
    with no record read meanwhile."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.since: float | None = None
        self.position = -1

    def check(self, position: int) -> None:
        r = self.reader
        if position != self.position or all(p.follower.alive for p in r._parts):
            self.since, self.position = None, position
        elif self.since is None:
            self.since = time.monotonic()
        elif time.monotonic() - self.since > r.dead_timeout:
            raise WriterGoneError(
                f"the writer of {r.describe()} has been gone for {r.dead_timeout:.0f} s"
            )


class Reader:
    """Reads records of one ring, or of every ring under a prefix (`books` covers
    `books.<feed>.<shard>` of every feed and venue).

    `poll()` and iteration return a view of a reader-owned buffer that the next read
    overwrites: use it at once or `.copy()` it. `read_batch()` returns an array you own.
    Symbols are named as the venue names them ("BTCUSDT"), or "<exchange>:<symbol>"
    ("bybit-linear:BTCUSDT") where two venues share a name.
    """

    dead_timeout = 30.0

    def __init__(self, instance: str, rings: list[MappedRing], idle: str | float) -> None:
        self.instance = instance
        self._parts: list[_Part] = []
        base = 0
        for ring in rings:
            self._parts.append(_Part(ring, base if len(rings) > 1 else 0))
            base += len(ring.symbols)
        self._one = self._parts[0] if len(self._parts) == 1 else None
        self._idle = idle
        self._closed = False
        self._rr = 0
        self._lost_followed = 0
        self._next_check = 0
        self._bases = np.zeros(len(self._parts), np.uint32)  # iteration reads them per record
        self._index_symbols()

    # ----- symbols ----------------------------------------------------------------------

    def _index_symbols(self) -> None:
        base = 0
        multi = len(self._parts) > 1
        by_name: dict[str, list[tuple[_Part, int]]] = {}
        for i, part in enumerate(self._parts):
            part.cursor.symbol_base = self._bases[i] = base if multi else 0
            for sid, sym in enumerate(part.ring.symbols):
                by_name.setdefault(sym, []).append((part, sid))
                by_name.setdefault(f"{part.ring.exchange}:{sym}", []).append((part, sid))
            base += len(part.ring.symbols)
        self._by_name = by_name
        self._resolved: dict[str, tuple[_Part, int]] = {}
        self._tops: dict[str, tuple[_Part, LatestView, TopRead, int, int]] = {}

    def _resolve(self, symbol: str) -> tuple[_Part, int]:
        hit = self._resolved.get(symbol)
        if hit is not None:
            return hit
        if self._closed:
            raise ReaderClosedError(f"{self.describe()} is closed")
        places = self._by_name.get(symbol)
        if places is None:
            for part in self._parts:
                part.ring.refresh_symbols()
            self._index_symbols()
            places = self._by_name.get(symbol)
            if places is None:
                raise KeyError(
                    f"{symbol!r} is not in {self.describe()}; symbols: {self.qualified_symbols}"
                )
        exchanges = {p.ring.exchange for p, _ in places}
        if len(exchanges) > 1:
            options = sorted(f"{p.ring.exchange}:{symbol}" for p, _ in places)
            raise KeyError(
                f"{symbol!r} is on several venues in {self.describe()}: name one of {options}"
            )
        hit = self._resolved[symbol] = places[0]
        return hit

    @property
    def symbols(self) -> list[str]:
        """Every symbol of the ring(s): `symbols[rec["symbol_id"]]` names a record's symbol.

        Over several rings the records' symbol_id is rewritten, in the reader's own copies,
        to this reader-wide index.
        """
        return [s for part in self._parts for s in part.ring.symbols]

    @property
    def qualified_symbols(self) -> list[str]:
        """`symbols`, each as "<exchange>:<symbol>": unique across venues."""
        return [f"{p.ring.exchange}:{s}" for p in self._parts for s in p.ring.symbols]

    @property
    def instruments(self) -> list[Instrument | None]:
        """The normalized instrument of each symbol, by reader-wide id (None if the writer
        gave none)."""
        return [i for part in self._parts for i in part.ring.instruments]

    # ----- streaming ----------------------------------------------------------------------

    def poll(self) -> np.void | None:
        """The next record, or None when there is none yet; never blocks."""
        one = self._one
        if one is not None:
            rec = one.cursor.poll()
            if rec is None:
                self._idle_tick()
            return rec
        if self._closed:
            raise ReaderClosedError(f"{self.describe()} is closed")
        n = len(self._parts)
        for _ in range(n):
            part = self._parts[self._rr]
            self._rr = (self._rr + 1) % n
            rec = part.cursor.poll()
            if rec is not None:
                return rec
        self._idle_tick()
        return None

    def _idle_tick(self) -> None:
        now = time.monotonic_ns()
        if now >= self._next_check:
            self._next_check = now + _CHECK_NS
            self._check_writers()

    def _check_writers(self) -> None:
        """Follow writer restarts: a new generation in place, or a replaced segment."""
        changed = False
        for part in self._parts:
            what = part.follower.check()
            if what == "restarted":
                w = part.ring.cursor_now()
                if w < part.cursor.next:  # defensive: a cursor never moves back in place
                    part.cursor.next = w
                changed = True
            elif what == "replaced":
                self._lost_followed += part.follow_new_segment()
                changed = True
        if changed:
            self._one = self._parts[0] if len(self._parts) == 1 else None
            self._index_symbols()

    def read_batch(self, max_n: int = 1024) -> np.ndarray:
        """Every record available now, up to max_n, as an array you own (oldest first)."""
        if not isinstance(max_n, int) or max_n < 1:
            raise ValueError(f"max_n must be a positive integer, got {max_n!r}")
        if self._closed:
            raise ReaderClosedError(f"{self.describe()} is closed")
        out = []
        budget = max_n
        for part in self._parts:
            if budget <= 0:
                break
            got = part.cursor.read_batch(budget)
            if len(got):
                out.append(got)
                budget -= len(got)
        if not out:
            self._idle_tick()
            return np.empty(0, self.dtype)
        return out[0] if len(out) == 1 else np.concatenate(out)

    def __iter__(self) -> Iterator[np.void]:
        """Yield records as they arrive; spins, or yields the CPU per `idle` (see attach).

        C polls the rings in turn and hands back each record without a Python frame per
        record; Python runs only when every ring is empty (writer checks, the dead-writer
        timeout) or one was lapped."""
        wait = self._idle_wait()
        watch = _DeadWatch(self)
        bound = [p.cursor for p in self._parts]

        def parts() -> list[tuple[object, np.void]]:
            return [(c.c, c.record) for c in bound]

        def on_idle(result: int, index: int) -> list[tuple[object, np.void]] | None:
            nonlocal bound
            if self._closed:
                raise StopIteration
            if result != EMPTY:
                self._parts[index].cursor.skip_lapped()
                return None
            if wait is not None:
                wait()
            if time.monotonic_ns() < self._next_check:
                return None
            self._idle_tick()  # the only place a cursor is replaced
            watch.check(sum(p.cursor.next for p in self._parts))
            now = [p.cursor for p in self._parts]
            if any(a is not b for a, b in zip(now, bound, strict=True)):
                bound = now  # a writer replaced its segment: new cursors
                return parts()
            return None

        return seqlock.Records(parts(), self._bases, _SPINS if wait is None else 0, on_idle)

    def _idle_wait(self) -> Callable[[], object] | None:
        """What an empty poll does before the next: nothing when spinning."""
        if self._idle == "spin":
            return None
        if self._idle == "yield":
            return os.sched_yield
        return functools.partial(time.sleep, float(self._idle))

    # ----- conflated access ---------------------------------------------------------------

    def latest(self, symbol: str, levels: int | None = None) -> np.void | None:
        """The newest record of a symbol (a consistent copy in a reader-owned buffer), or None.

        levels: copy only the fixed fields and the best `levels` levels of each side (a record
        of book_dtype(levels)), so a strategy pays only for what it reads.
        """
        part, sid = self._resolve(symbol)
        while True:
            if levels is None:
                rec = part.view.read(sid, part.cursor.symbol_base)
            else:
                rec = part.view.read_partial(sid, levels)
                if rec is not None and not isinstance(rec, int) and part.cursor.symbol_base:
                    rec["symbol_id"] += part.cursor.symbol_base
            if not isinstance(rec, int):
                return rec
            if not part.ring.h.writer_alive:
                return None  # a writer that died mid-write left this slot torn

    def top(self, symbol: str) -> tuple[float, float, float, float] | None:
        """(best bid, bid qty, best ask, ask qty) of a symbol's newest synced book, or None.

        None also when the book is not synced or a side is empty: never a guessed price.
        """
        hit = self._tops.get(symbol)
        if hit is None or hit[0].view is not hit[1]:  # a new segment brings a new view
            hit = self._top_entry(symbol)
        part, _, read_top, offset, asks_rel = hit
        while True:
            top = read_top(offset, asks_rel)
            if top is not False:
                return top
            if not part.ring.h.writer_alive:
                return None

    def _top_entry(self, symbol: str) -> tuple[_Part, LatestView, TopRead, int, int]:
        """What top() reads for a symbol, resolved once: it is the hottest call of a strategy."""
        part, sid = self._resolve(symbol)
        view = part.view
        if not view.asks_rel:
            raise TypeError(f"top() needs a book ring; {part.ring.ring!r} holds trades")
        hit = self._tops[symbol] = (
            part,
            view,
            view.top_reader(),
            view.slot_offset(sid),
            view.asks_rel,
        )
        return hit

    def tops(
        self, instrument: Instrument | str
    ) -> dict[str, tuple[float, float, float, float] | None]:
        """The top of book of one instrument on every venue the reader covers, in one call:
        {"<exchange>:<symbol>": (bid, bid qty, ask, ask qty) or None}.

        instrument: an Instrument, or "BASE/QUOTE" (any kind) or "BASE/QUOTE:kind".
        """
        if isinstance(instrument, str):
            pair, _, kind = instrument.partition(":")
            base, _, quote = pair.partition("/")
            if not base or not quote:
                raise ValueError(
                    f"instrument {instrument!r}: write it as BASE/QUOTE or BASE/QUOTE:kind"
                )
            want = (base.upper(), quote.upper(), kind or None)
        else:
            want = (instrument.base, instrument.quote, instrument.kind)
        if self._closed:
            raise ReaderClosedError(f"{self.describe()} is closed")
        out: dict[str, tuple[float, float, float, float] | None] = {}
        for part in self._parts:
            if part.ring.kind != L.KIND_BOOK:
                continue
            for sid, inst in enumerate(part.ring.instruments):
                if inst is None or (inst.base, inst.quote) != want[:2]:
                    continue
                if want[2] is not None and inst.kind != want[2]:
                    continue
                key = f"{part.ring.exchange}:{part.ring.symbols[sid]}"
                top = part.view.top(sid)
                out[key] = None if top is False else top
        return out

    # ----- state --------------------------------------------------------------------------

    @property
    def lost(self) -> int:
        """Records this reader missed because the writer lapped it (exact)."""
        return self._lost_followed + sum(p.cursor.lost for p in self._parts)

    @property
    def dtype(self) -> np.dtype:
        """The record dtype."""
        return self._parts[0].ring.dtype

    @property
    def writer_alive(self) -> bool:
        """True when every ring's writer process is running."""
        return all(p.ring.h.writer_alive for p in self._parts)

    @property
    def generation(self) -> int:
        """The writer generation (the highest, over rings); bumps on every writer restart."""
        return max(p.ring.h.generation for p in self._parts)

    @property
    def restarts(self) -> int:
        """Writer restarts this reader has followed."""
        self._check_writers()
        return sum(p.follower.restarts for p in self._parts)

    @property
    def rings(self) -> list[str]:
        return [p.ring.ring for p in self._parts]

    @property
    def exchanges(self) -> list[str]:
        """The exchange (venue and market) of each ring, e.g. "binance-futures"."""
        return [p.ring.exchange for p in self._parts]

    def describe(self) -> str:
        return f"instance {self.instance!r} ring(s) {', '.join(self.rings)}"

    def backlog(self) -> int:
        """Records written but not yet read by this reader."""
        return sum(p.cursor.backlog() for p in self._parts)

    def seek_recent(self, n: int) -> None:
        """Rewind so the next reads return (up to) the last n records of each ring."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"seek_recent needs a record count >= 0, got {n!r}")
        for part in self._parts:
            part.cursor.seek_recent(n)

    @property
    def position(self) -> int:
        """The number of the next message this reader reads: all before it are consumed.

        For a reader of one ring (a multi-ring reader has one position per ring).
        """
        return self._single("position").cursor.next

    def seek(self, position: int) -> None:
        """Go on reading at message `position` of a one-ring reader (e.g. a saved `position`).

        Messages the writer already overwrote cannot be read: they count in `lost`.
        """
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(f"seek needs a message number >= 0, got {position!r}")
        self._single("seek").cursor.seek(position)

    def _single(self, what: str) -> _Part:
        if len(self._parts) != 1:
            raise ValueError(f"{what} is for a reader of one ring; this one reads {self.rings}")
        return self._parts[0]

    def seek_oldest(self) -> None:
        """Rewind to the oldest record still in the ring(s) (default: the live edge at attach)."""
        for part in self._parts:
            part.cursor.next = part.ring.oldest()

    def close(self) -> None:
        """Unmap the segments; records returned earlier become invalid."""
        if self._closed:
            return
        self._closed = True
        self._resolved = {}
        self._tops = {}
        self._by_name = {}
        for part in self._parts:
            part.release()
            part.ring.unmap()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Reader {self.describe()} lost={self.lost}>"


_KIND_ARG = {
    "book": L.KIND_BOOK,
    "trade": L.KIND_TRADE,
    "ticker": L.KIND_TICKER,
    "candle": L.KIND_CANDLE,
    None: None,
}


def _rings_matching(instance: str, ring: str, owner: int | str | None) -> list[str]:
    present = [r for _, r in list_segments(instance, owner)]
    if ring in present:
        return [ring]
    return sorted(r for r in present if r.startswith(ring + "."))


def _check_idle(idle: object) -> None:
    if idle in ("spin", "yield"):
        return
    if (
        isinstance(idle, bool)
        or not isinstance(idle, int | float)
        or not math.isfinite(idle)
        or idle <= 0
    ):
        raise ValueError(f"idle must be 'spin', 'yield' or a number of seconds > 0, got {idle!r}")


def attach(
    instance: str = "default",
    ring: str = "books",
    *,
    kind: str | None = None,
    wait: bool | None = None,
    timeout: float | None = None,
    idle: str | float = "spin",
    owner: int | str | None = None,
) -> Reader:
    """Attach read-only to a ring of a running mdpipe instance.

    ring: an exact segment name ("books.usdm.0") or a prefix covering several ("books").
    kind: "book", "trade", "ticker" or "candle" to refuse a ring of another kind.
    wait: wait for the ring to appear, up to `timeout` seconds (forever when None); a
      timeout alone implies waiting.
    idle: how iteration waits for data: "spin" (lowest latency, one core busy), "yield"
      (os.sched_yield between polls), or a number of seconds to sleep.
    owner: the user whose segments to trust (default: yours); segments of anyone else,
      links, FIFOs and group- or world-writable files are never read.
    """
    check_names(instance, ring)
    if kind not in _KIND_ARG:
        raise ValueError(f"kind must be 'book', 'trade', 'ticker', 'candle' or None, got {kind!r}")
    _check_idle(idle)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        if wait is False:
            raise ValueError("timeout is how long to wait: it needs wait=True (or leave wait out)")
        wait = True
    resolve_owner(owner)
    deadline = None if timeout is None else time.monotonic() + timeout
    # A segment whose header is still being written is microseconds from complete: even
    # without `wait`, look again for up to a second rather than report it as broken.
    not_ready_until = None
    while True:
        names = _rings_matching(instance, ring, owner)
        if names:
            try:
                return Reader(
                    instance, [MappedRing(instance, r, _KIND_ARG[kind], owner) for r in names], idle
                )
            except SegmentNotReady:
                not_ready_until = not_ready_until or time.monotonic() + 1.0
            except SegmentMissing:
                pass  # removed between listing and mapping: look again
        now = time.monotonic()
        retrying = not_ready_until is not None and now < not_ready_until
        if not retrying and (not wait or (deadline is not None and now >= deadline)):
            waited = f" after waiting {timeout:g} s" if wait and timeout is not None else ""
            prefix = shm_path(instance, ring)
            ignored = [
                f"{path} {why}"
                for path, why in refused_segments().items()
                if path == prefix or path.startswith(prefix + ".")
            ]
            hint = (
                f"; ignored as untrusted: {'; '.join(ignored)} (owner= names whose to trust)"
                if ignored
                else ""
            )
            raise NoSuchRingError(
                f"no ring {ring!r} in instance {instance!r}{waited}; {_describe_instances(owner)}{hint}"
            )
        time.sleep(0.001 if retrying else 0.05)
