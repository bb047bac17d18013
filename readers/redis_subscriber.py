"""Print mdpipe's books and trades from Redis and report every real sequence gap it sees.

    python readers/redis_subscriber.py --url redis://127.0.0.1:6379/0 BTCUSDT bybit-linear:ETHUSDT

Uses mdpipe.redis_consumer.Subscriber (`pip install mdpipe` on the consumer's machine): it subscribes, waits for
the subscriptions to be confirmed, reads the orderbook keys so the newest book shows at once,
then follows the channels. Each book carries `seq`, mdpipe's per-symbol record number: a jump
is a gap (books conflated, dropped while Redis was down, or missed while reconnecting; every
book is a full snapshot, so nothing needs repairing), a drop to a newer record with a smaller
number means the ingest writer restarted, and a book already seen is skipped. A symbol name
on several venues is named as venue:SYMBOL.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from mdpipe.redis_consumer import ConsumerError, Event, Subscriber


def fmt_book(book: dict, levels: int) -> str:
    bids, asks = book["bids"], book["asks"]
    best_bid = f"{bids[0][0]} x {bids[0][1]}" if bids else "-"
    best_ask = f"{asks[0][0]} x {asks[0][1]}" if asks else "-"
    depth = " ".join(f"{p}x{q}" for p, q in bids[1:levels])
    state = "synced" if book["synced"] else "NOT SYNCED"
    return (
        f"{book['symbol']} book seq={book['seq']} bid {best_bid} | ask {best_ask} "
        f"({len(bids)}/{len(asks)} levels, {state}) {depth}"
    ).rstrip()


def fmt_trade(t: dict) -> str:
    return f"{t['symbol']} trade {t['trade_id']} {t['side']} {t['quantity']} @ {t['price']}"


def show(ev: Event, levels: int) -> bool:
    """Print one event; True when it was a message from Redis (counts towards --count)."""
    if ev.kind == "book":
        print(("snapshot " if ev.snapshot else "") + fmt_book(ev.data, levels), flush=True)
        return not ev.snapshot
    if ev.kind == "trade":
        print(fmt_trade(ev.data), flush=True)
        return True
    if ev.kind == "market_data":
        d = ev.data
        print(f"{d['symbol']} ticker last {d['last_price']} mid {d['mid_price']}", flush=True)
        return True
    print(ev.describe(), flush=True)
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("symbols", nargs="+", help="symbols, e.g. BTCUSDT or bybit-linear:BTCUSDT")
    ap.add_argument("--url", default=os.environ.get("MDPIPE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--password-env", default="MDPIPE_REDIS_PASSWORD")
    ap.add_argument("--market-data", action="store_true", help="also print the tickers")
    ap.add_argument("--levels", type=int, default=3, help="bid levels to print per book")
    ap.add_argument("--count", type=int, default=0, help="exit after this many messages")
    ap.add_argument("--timeout", type=float, default=0, help="exit after this many seconds")
    ap.add_argument(
        "--wait", type=float, default=0, help="seconds to wait for the publisher to list symbols"
    )
    args = ap.parse_args(argv)
    try:
        sub = Subscriber(
            args.url,
            args.symbols,
            password=os.environ.get(args.password_env) or None,
            market_data=args.market_data,
            wait=args.wait,
        )
    except ConsumerError as exc:
        print(f"redis_subscriber: {exc}", file=sys.stderr)
        return 2
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while not (args.count and seen >= args.count):
            if deadline is not None and time.monotonic() >= deadline:
                break
            for ev in sub.poll(0.5):
                seen += show(ev, args.levels)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
    print(
        f"received {seen} messages; {sub.gaps} gaps ({sub.missed} books not received), "
        f"{sub.resets} writer restarts, {sub.reconnects} reconnects",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    # Die quietly when the reading end goes away (`... | head -1`), as Unix filters do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
