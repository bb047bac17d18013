"""Print mdpipe's books and trades from Redis and report every sequence gap it sees.

    python readers/redis_subscriber.py --url redis://127.0.0.1:6379/0 BTCUSDT ETHUSDT

Needs only redis-py. It subscribes first, then reads the orderbook:{SYMBOL} keys so the
newest book shows at once, then follows the channels. Each book carries `seq`, mdpipe's
per-symbol record number: a jump is a gap (books conflated, lost, or sent while Redis was
down; every book is a full snapshot, so nothing needs repairing), a drop to a newer record
with a smaller number means the ingest writer restarted, and an already seen seq (the
publisher re-sends the newest book after a Redis outage) is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import redis


class SeqTracker:
    """Per-symbol book sequence checking: gaps, writer restarts, duplicates."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, int]] = {}  # symbol -> (seq, timestamp)
        self.gaps = 0
        self.missed = 0
        self.resets = 0

    def check(self, symbol: str, seq: int, ts: int) -> str | None:
        """'dup' for a book already seen, a message for a gap or restart, None when in order."""
        prev = self.last.get(symbol)
        if prev is not None and seq <= prev[0] and ts <= prev[1]:
            return "dup"
        self.last[symbol] = (seq, ts)
        if prev is None or seq == prev[0] + 1:
            return None
        if seq > prev[0]:
            missed = seq - prev[0] - 1
            self.gaps += 1
            self.missed += missed
            return f"{symbol} GAP: seq {prev[0]} -> {seq}, {missed} book update(s) not received"
        self.resets += 1
        return f"{symbol} RESET: seq {prev[0]} -> {seq}, the ingest writer restarted"


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("symbols", nargs="+", help="symbols, e.g. BTCUSDT")
    ap.add_argument("--url", default=os.environ.get("MDPIPE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--password-env", default="MDPIPE_REDIS_PASSWORD")
    ap.add_argument("--orderbook-channel", default="orderbook:{symbol}")
    ap.add_argument("--trades-channel", default="trades:{symbol}")
    ap.add_argument("--market-data-channel", default="market_data:{symbol}")
    ap.add_argument("--market-data", action="store_true", help="also print the tickers")
    ap.add_argument("--levels", type=int, default=3, help="bid levels to print per book")
    ap.add_argument("--count", type=int, default=0, help="exit after this many messages")
    ap.add_argument("--timeout", type=float, default=0, help="exit after this many seconds")
    args = ap.parse_args(argv)

    r = redis.Redis.from_url(args.url, password=os.environ.get(args.password_env) or None)
    books = {args.orderbook_channel.format(symbol=s): s for s in args.symbols}
    trades = {args.trades_channel.format(symbol=s): s for s in args.symbols}
    channels = [*books, *trades]
    if args.market_data:
        channels += [args.market_data_channel.format(symbol=s) for s in args.symbols]
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(*channels)
    tracker = SeqTracker()
    # Subscribed first, so nothing falls between the snapshot and the stream.
    for channel in books:
        raw = r.get(channel)
        if raw is not None:
            book = json.loads(raw)
            tracker.check(book["symbol"], book["seq"], book["timestamp"])
            print("snapshot", fmt_book(book, args.levels), flush=True)
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while not (args.count and seen >= args.count):
            if deadline is not None and time.monotonic() >= deadline:
                break
            msg = ps.get_message(timeout=0.5)
            if msg is None:
                continue
            seen += 1
            channel = msg["channel"].decode()
            data = json.loads(msg["data"])
            if channel in books:
                problem = tracker.check(data["symbol"], data["seq"], data["timestamp"])
                if problem == "dup":
                    continue
                if problem:
                    print(problem, flush=True)
                print(fmt_book(data, args.levels), flush=True)
            elif channel in trades:
                print(fmt_trade(data), flush=True)
            else:
                print(channel, json.dumps(data), flush=True)
    except KeyboardInterrupt:
        pass
    print(
        f"received {seen} messages; {tracker.gaps} gaps ({tracker.missed} books not received), "
        f"{tracker.resets} writer restarts",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    # Die quietly when the reading end goes away (`... | head -1`), as Unix filters do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
