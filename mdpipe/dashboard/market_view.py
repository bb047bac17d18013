"""The market half of a dashboard frame: a ladder and a trade tape for one (ring, symbol).

Readers stay attached between frames and only for the rings some page watches. A ring whose
writer generation changed (a restarted ingest) or that vanished is re-attached; a book is
shown only while it is exact (synced) and its writer runs: a page never shows a stale or
rebuilding book as live.
"""

from __future__ import annotations

import contextlib
from collections import deque

import numpy as np

from mdpipe.readers import NoSuchRingError, Reader, attach
from mdpipe.shm.layout import FLAG_CROSSED, FLAG_SYNCED
from mdpipe.shm.segment import SegmentStatus

LEVELS = 10  # price levels per side on the ladder
TAPE = 20  # trades on the tape
TAPE_BACKFILL = 4096  # records re-read when a trades ring is (re)attached
BATCH = 4096


def trades_ring_of(books_ring: str) -> str:
    """The trades ring written by the same ingest process as a books ring."""
    return "trades" + books_ring[len("books") :] if books_ring.startswith("books") else ""


class _Attached:
    """One attached reader and the writer generation it was attached at."""

    def __init__(self, reader: Reader, generation: int) -> None:
        self.reader = reader
        self.generation = generation
        self.tapes: dict[int, deque[list]] = {}
        self.watched: set[int] = set()  # symbol ids whose trades are kept
        self.watched_ids = np.empty(0, np.uint32)


class MarketView:
    """Ladders and tapes of the watched symbols, from readers kept attached between frames."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._books: dict[str, _Attached] = {}
        self._trades: dict[str, _Attached] = {}

    def refresh(self, statuses: dict[str, SegmentStatus], watched: set[tuple[str, str]]) -> None:
        """Attach, re-attach or drop readers to match the watched (books ring, symbol) pairs,
        and move new trades of the watched symbols onto their tapes."""
        wanted_books = {ring for ring, _ in watched if ring in statuses}
        wanted_trades = {trades_ring_of(r) for r in wanted_books} & set(statuses)
        self._sync(self._books, wanted_books, statuses, "book")
        self._sync(self._trades, wanted_trades, statuses, "trade")
        for ring, att in list(self._trades.items()):
            symbols = {sym for books, sym in watched if trades_ring_of(books) == ring}
            try:
                self._watch(att, symbols)
                self._drain(att)
            except Exception:  # the segment went away under us: attach again next frame
                self._drop(self._trades, ring)

    @staticmethod
    def _watch(att: _Attached, symbols: set[str]) -> None:
        """Keep tapes for these symbols only; a newly watched one is backfilled from the ring."""
        names = att.reader.symbols
        ids = {names.index(s) for s in symbols if s in names}
        if ids == att.watched:
            return
        if ids - att.watched:
            att.tapes.clear()
            att.reader.seek_recent(TAPE_BACKFILL)
        att.watched = ids
        att.watched_ids = np.fromiter(ids, dtype=np.uint32, count=len(ids))

    def _sync(
        self,
        attached: dict[str, _Attached],
        wanted: set[str],
        statuses: dict[str, SegmentStatus],
        kind: str,
    ) -> None:
        for ring in list(attached):
            if ring not in wanted or attached[ring].generation != statuses[ring].generation:
                self._drop(attached, ring)
        for ring in wanted - set(attached):
            try:
                reader = attach(self.instance, ring, kind=kind)
            except (NoSuchRingError, OSError, RuntimeError):
                continue  # not there yet (a writer is starting): try on the next frame
            attached[ring] = _Attached(reader, statuses[ring].generation)

    @staticmethod
    def _drop(attached: dict[str, _Attached], ring: str) -> None:
        att = attached.pop(ring)
        with contextlib.suppress(Exception):
            att.reader.close()

    @staticmethod
    def _drain(att: _Attached) -> None:
        """Move new trades of the watched symbols onto their tapes (bounded work per frame)."""
        for _ in range(8):
            recs = att.reader.read_batch(BATCH)
            if not len(recs):
                return
            recs = recs[np.isin(recs["symbol_id"], att.watched_ids)]
            for sid, ts, price, qty, side, tid in zip(
                recs["symbol_id"].tolist(),
                recs["exchange_ts_ns"].tolist(),
                recs["price"].tolist(),
                recs["qty"].tolist(),
                recs["side"].tolist(),
                recs["trade_id"].tolist(),
                strict=True,
            ):
                tape = att.tapes.get(sid)
                if tape is None:
                    tape = att.tapes[sid] = deque(maxlen=TAPE)
                tape.append([ts, price, qty, side, tid])

    def frame(self, ring: str, symbol: str, statuses: dict[str, SegmentStatus]) -> dict:
        """The ladder and tape of one symbol of one books ring, with its state."""
        st = statuses.get(ring)
        out: dict = {"ring": ring, "symbol": symbol, "exchange": st.exchange if st else ""}
        book = self._books.get(ring)
        if st is None or book is None:
            return out | {"state": "no ring", "bids": [], "asks": [], "trades": []}
        if symbol not in st.symbols:
            return out | {"state": "unknown symbol", "bids": [], "asks": [], "trades": []}
        out |= self._book(book.reader, symbol, st)
        out["trades"], out["trades_state"] = self._tape(ring, symbol, statuses)
        return out

    @staticmethod
    def _book(reader: Reader, symbol: str, st: SegmentStatus) -> dict:
        if not st.writer_alive:
            return {"state": "writer down", "bids": [], "asks": []}
        rec = reader.latest(symbol)
        if rec is None:
            return {"state": "no data", "bids": [], "asks": []}
        flags = int(rec["flags"])
        nb, na = min(int(rec["bid_count"]), LEVELS), min(int(rec["ask_count"]), LEVELS)
        common = {
            # A string: update ids may pass 2**53, past which JavaScript numbers are inexact.
            "uid": str(int(rec["last_update_id"])),
            "symbol_seq": int(rec["symbol_seq"]),
            "exchange_ts_ns": int(rec["exchange_ts_ns"]),
            "commit_ts_ns": int(rec["commit_ts_ns"]),
            "crossed": bool(flags & FLAG_CROSSED),
        }
        if not flags & FLAG_SYNCED:
            return common | {"state": "not synced", "bids": [], "asks": []}
        return common | {
            "state": "live",
            "bids": rec["bids"][:nb].tolist(),
            "asks": rec["asks"][:na].tolist(),
        }

    def _tape(self, ring: str, symbol: str, statuses: dict[str, SegmentStatus]) -> tuple[list, str]:
        tring = trades_ring_of(ring)
        st = statuses.get(tring)
        att = self._trades.get(tring)
        if st is None or att is None:
            return [], "no ring"
        try:
            sid = att.reader.symbols.index(symbol)
        except ValueError:
            return [], "unknown symbol"
        tape = att.tapes.get(sid)
        trades = list(reversed(tape)) if tape else []
        return trades, "live" if st.writer_alive else "writer down"

    def close(self) -> None:
        """Detach every reader."""
        for attached in (self._books, self._trades):
            for ring in list(attached):
                self._drop(attached, ring)
