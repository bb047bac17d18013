"""A local strategy reading mdpipe's shared-memory rings: the reader API in one page.

    python readers/strategy_example.py --instance demo --symbol BTCUSDT --seconds 5

It reads the conflated top of book with `top()`, streams every book record by iterating a
reader, takes the trades that arrived in batches with `read_batch()`, and prints a summary
(the last line is JSON). Needs a running instance: `make demo` or `mdpipe start`.
"""

from __future__ import annotations

import argparse
import json
import signal
import time

from mdpipe.readers import attach
from mdpipe.shm import layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instance", default="demo")
    ap.add_argument("--symbol", default="BTCUSDT")
    ap.add_argument("--seconds", type=float, default=5.0)
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

    # Conflated access: the newest exact top of book, None while the book is not synced.
    print(f"{sym} top now: {books.top(sym)}")

    records = synced = moves = 0
    volume = notional = 0.0
    last_mid = None
    end = time.monotonic() + args.seconds
    for rec in books:  # every book record, in order; `rec` is valid until the next one
        records += 1
        synced += bool(rec["flags"] & layout.FLAG_SYNCED)
        top = books.top(sym)  # ~0.4 µs: reads the symbol's latest slot, not the ring
        if top is not None:
            bid, _bid_qty, ask, _ask_qty = top
            mid = (bid + ask) / 2
            moves += last_mid is not None and mid != last_mid
            last_mid = mid
        batch = trades.read_batch(1024)  # every trade since the last call, as an array
        batch = batch[batch["symbol_id"] == trade_sid]
        volume += float(batch["qty"].sum())
        notional += float((batch["price"] * batch["qty"]).sum())
        if time.monotonic() >= end:
            break

    top = books.top(sym)
    summary = {
        "symbol": sym,
        "records": records,
        "synced_records": synced,
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
