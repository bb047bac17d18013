"""A local strategy reading mdpipe's shared-memory rings: the reader API in one page.

    python readers/strategy_example.py --instance demo --symbol BTCUSDT --seconds 5
    python readers/strategy_example.py --instance replay --replay   # the same code on history

It reads the conflated top of book with `top()`, streams every book record by iterating a
reader, takes the trades that arrived in batches with `read_batch()`, and prints a summary
(the last line is JSON). Needs a running instance: `make demo` or `mdpipe start`, or, with
--replay, the rings `mdpipe replay --instance replay` writes from the history archive: then it
reads from the first replayed record until the replay has ended and the rings are drained
(replayed records carry FLAG_REPLAYED and their original timestamps).
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections.abc import Iterator

import numpy as np

from mdpipe.readers import Reader, attach
from mdpipe.shm import layout


def replay_records(books: Reader) -> Iterator[np.void]:
    """Book records of a replay until its writer has gone and the ring is drained."""
    while True:
        batch = books.read_batch(4096)
        if not len(batch):
            if books.writer_alive:
                time.sleep(0.001)
                continue
            batch = books.read_batch(4096)  # committed before the writer closed
            if not len(batch):
                return
        yield from batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instance", default="demo")
    ap.add_argument("--symbol", default="BTCUSDT")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--replay", action="store_true", help="read a replay instance to its end")
    args = ap.parse_args()
    sym = args.symbol

    # "books" covers every shard books.<feed>.<i>; idle=0.0005 sleeps 0.5 ms when there is
    # nothing new (idle="spin" gives the lowest latency at the price of a busy core).
    books = attach(args.instance, "books", kind="book", wait=True, timeout=30, idle=0.0005)
    trades = attach(args.instance, "trades", kind="trade", wait=True, timeout=30)
    print(f"attached to {books.describe()}; symbols {', '.join(books.symbols)}")
    # A record names its symbol by id: the index in the reader's `symbols` list (over any
    # number of shards: the reader rewrites ids in its own copies).
    trade_sid = trades.symbols.index(sym)

    book_sid = books.symbols.index(sym)
    # Conflated access: the newest exact top of book, None while the book is not synced.
    print(f"{sym} top now: {books.top(sym)}")
    if args.replay:  # everything the replay wrote, from its first record
        books.seek_oldest()
        trades.seek_oldest()

    records = synced = moves = replayed = 0
    volume = notional = 0.0
    last_mid = None
    end = time.monotonic() + args.seconds
    for rec in replay_records(books) if args.replay else books:
        # Every book record, in order; `rec` is valid until the next one.
        records += 1
        synced += bool(rec["flags"] & layout.FLAG_SYNCED)
        replayed += bool(rec["flags"] & layout.FLAG_REPLAYED)
        if rec["symbol_id"] == book_sid and rec["bid_count"] and rec["ask_count"]:
            mid = float(rec["bids"][0, 0] + rec["asks"][0, 0]) / 2  # this record's best level
            moves += last_mid is not None and mid != last_mid
            last_mid = mid
        batch = trades.read_batch(1024)  # every trade since the last call, as an array
        batch = batch[batch["symbol_id"] == trade_sid]
        volume += float(batch["qty"].sum())
        notional += float((batch["price"] * batch["qty"]).sum())
        if not args.replay and time.monotonic() >= end:
            break
    if args.replay:  # the trades after the last book
        while len(batch := trades.read_batch(1 << 16)):
            batch = batch[batch["symbol_id"] == trade_sid]
            volume += float(batch["qty"].sum())
            notional += float((batch["price"] * batch["qty"]).sum())

    top = books.top(sym)
    summary = {
        "symbol": sym,
        "records": records,
        "synced_records": synced,
        "replayed_records": replayed,
        "mid_moves": moves,
        "trade_volume": round(volume, 6),
        "vwap": round(notional / volume, 2) if volume else None,
        "lost": books.lost + trades.lost,  # records the writer lapped us by (exact)
        "writer_restarts_followed": books.restarts,
        "top": None
        if top is None
        else {"bid": top[0], "bid_qty": top[1], "ask": top[2], "ask_qty": top[3]},
    }
    print(
        f"{records} book records ({synced} synced), {moves} mid moves in {sym}, "
        f"{sym} traded {volume:.4f} at VWAP {summary['vwap']}, lost {summary['lost']}"
    )
    print(json.dumps(summary))
    books.close()
    trades.close()


if __name__ == "__main__":
    # Die quietly when the reading end goes away (`... | head -1`), as Unix filters do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
