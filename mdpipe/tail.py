"""`mdpipe tail SYMBOL`: a live book ladder and trade tape in the terminal, read from the rings.

The book comes from the ring's latest table (`Reader.latest`), the tape from the trades ring;
the screen is redrawn about ten times a second with plain ANSI escapes (no curses).
"""

from __future__ import annotations

import collections
import signal
import sys
import time

import click
import numpy as np

from mdpipe.readers import NoSuchRingError, Reader, attach
from mdpipe.shm import layout as L
from mdpipe.shm.segment import iter_status
from mdpipe.supervisor import default_instance

FPS = 10
_RED, _GREEN, _DIM, _BOLD, _RESET = "\x1b[31m", "\x1b[32m", "\x1b[2m", "\x1b[1m", "\x1b[0m"


def find_rings(
    instance: str, symbol: str, feed: str | None = None
) -> tuple[str | None, str | None]:
    """(book ring, trade ring) that carry a symbol in an instance (of one feed, if given).

    Raises click.ClickException when the symbol is on several feeds (one symbol on two
    venues) and no feed was named.
    """
    books: dict[str, str] = {}
    trades: dict[str, str] = {}
    exchanges: dict[str, str] = {}
    for st in iter_status(instance):
        if symbol not in st.symbols or st.kind not in ("book", "trade"):
            continue
        ring_feed = st.ring.split(".")[1] if st.ring.count(".") == 2 else ""
        if feed is not None and ring_feed != feed:
            continue
        found = books if st.kind == "book" else trades
        found.setdefault(ring_feed, st.ring)
        if st.kind == "book":
            exchanges[ring_feed] = st.exchange
    if len(books) > 1:
        choices = ", ".join(f"{f} ({exchanges[f]})" for f in sorted(books))
        raise click.ClickException(f"{symbol} is on several feeds: {choices}; pick one with --feed")
    if not books:
        return None, None
    ((name, book),) = books.items()
    return book, trades.get(name)


def _decimals(values: list[float]) -> int:
    """The fewest decimals (up to 8) that show every value exactly."""
    for d in range(9):
        if all(abs(round(v, d) - v) <= 1e-9 * max(1.0, abs(v)) for v in values):
            return d
    return 8


def _clock(ns: int) -> str:
    if ns <= 0:
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.gmtime(ns / 1e9)) + f".{ns // 1_000_000 % 1000:03d}"


def _flag_names(flags: int) -> list[str]:
    names = ["synced" if flags & L.FLAG_SYNCED else "NOT SYNCED"]
    if flags & L.FLAG_RESYNC:
        names.append("resync")
    if flags & L.FLAG_PARTIAL:
        names.append("partial")
    if flags & L.FLAG_CROSSED:
        names.append("CROSSED")
    return names


class Tape:
    """The last trades of one symbol, kept from a trades ring."""

    def __init__(self, reader: Reader | None, symbol: str, size: int) -> None:
        self.reader = reader
        self.trades: collections.deque[tuple] = collections.deque(maxlen=size)
        self.sid = reader.symbols.index(symbol) if reader and symbol in reader.symbols else None
        if reader is not None:
            reader.seek_oldest()

    def update(self) -> None:
        """Take every trade written since the last update."""
        if self.reader is None or self.sid is None:
            return
        while True:
            batch = self.reader.read_batch(4096)
            if not len(batch):
                return
            mine = batch[batch["symbol_id"] == self.sid]
            for rec in mine[-self.trades.maxlen :]:
                self.trades.append(
                    (
                        int(rec["exchange_ts_ns"]),
                        int(rec["side"]),
                        float(rec["price"]),
                        float(rec["qty"]),
                        int(rec["trade_id"]),
                    )
                )


def ticker_line(rec: np.void | None, now_ns: int) -> str | None:
    """Mark price, funding and the 24 h figures of a ticker record; None without one.

    Fields the venue does not send are left out, never shown as zero.
    """
    if rec is None:
        return None
    filled = int(rec["filled"])

    def has(name: str) -> bool:
        return bool(filled & L.TICKER_BITS[name])

    parts = []
    for name, label in (("mark_price", "mark"), ("index_price", "index")):
        if has(name):
            parts.append(f"{label} {float(rec[name]):,.8g}")
    if has("funding_rate"):
        funding = f"funding {float(rec['funding_rate']) * 100:+.4f}%"
        if has("next_funding_ts_ns"):
            due = int(rec["next_funding_ts_ns"])
            left = max(0, due - now_ns) // 1_000_000_000
            funding += f" next {_clock(due)[:8]} UTC (in {left // 3600}h{left // 60 % 60:02d}m)"
        parts.append(funding)
    if has("open_interest"):
        parts.append(f"OI {float(rec['open_interest']):,.8g}")
    day = [
        (name, label)
        for name, label in (
            ("last_price", "last"),
            ("high_24h", "high"),
            ("low_24h", "low"),
            ("volume_24h", "vol"),
        )
        if has(name)
    ]
    if day:
        parts.append("24h " + " ".join(f"{label} {float(rec[n]):,.8g}" for n, label in day))
    age = (now_ns - int(rec["recv_ts_ns"])) / 1e9
    return "  ".join(parts) + f"  ({age:.1f} s ago)"


def render(
    symbol: str,
    ring: str,
    book: np.void | None,
    trades: list[tuple],
    levels: int,
    color: bool,
    ticker: np.void | None = None,
) -> str:
    """One frame: header, ticker, asks (highest first), spread, bids, then the newest trades."""
    c = (lambda code, text: f"{code}{text}{_RESET}") if color else (lambda _code, text: text)
    lines = []
    tline = ticker_line(ticker, time.time_ns())
    if book is None:
        lines.append(f"{c(_BOLD, symbol)}  {ring}  no book yet (waiting for the first record)")
    else:
        flags = int(book["flags"])
        now = time.time_ns()
        state = ", ".join(_flag_names(flags))
        state = c(_GREEN if flags & L.FLAG_SYNCED else _RED, state)
        lines.append(
            f"{c(_BOLD, symbol)}  {ring}  {state}  update {int(book['last_update_id'])} "
            f"(first {int(book['first_update_id'])}, prev {int(book['prev_update_id'])})  "
            f"seq {int(book['symbol_seq'])}"
        )
        lines.append(
            f"exchange {_clock(int(book['exchange_ts_ns']))} UTC  "
            f"age {(now - int(book['commit_ts_ns'])) / 1e6:.0f} ms  "
            f"feed->ring {(int(book['commit_ts_ns']) - int(book['recv_ts_ns'])) / 1e3:.0f} µs"
        )
        if tline:
            lines.append(tline)
        nb = min(int(book["bid_count"]), levels)
        na = min(int(book["ask_count"]), levels)
        bids = [(float(p), float(q)) for p, q in book["bids"][:nb]]
        asks = [(float(p), float(q)) for p, q in book["asks"][:na]]
        pd = _decimals([p for p, _ in bids + asks])
        qd = _decimals([q for _, q in bids + asks])
        width = max([len(f"{p:,.{pd}f}") for p, _ in bids + asks] + [5])
        qwidth = max([len(f"{q:,.{qd}f}") for _, q in bids + asks] + [3])
        lines.append(f"{'':5} {'PRICE':>{width}}  {'QTY':>{qwidth}}")
        for p, q in reversed(asks):
            lines.append(c(_RED, f"{'ask':5} {p:>{width},.{pd}f}  {q:>{qwidth},.{qd}f}"))
        if bids and asks:
            spread = asks[0][0] - bids[0][0]
            mid = (asks[0][0] + bids[0][0]) / 2
            bp = spread / mid * 1e4 if mid else 0.0
            lines.append(
                c(_DIM, f"----- spread {spread:,.{pd}f} ({bp:.2f} bp)  mid {mid:,.{pd + 1}f} -----")
            )
        else:
            lines.append(c(_DIM, "----- one side empty -----"))
        for p, q in bids:
            lines.append(c(_GREEN, f"{'bid':5} {p:>{width},.{pd}f}  {q:>{qwidth},.{qd}f}"))
    lines.append("")
    lines.append(f"TRADES ({len(trades)} most recent, newest first)")
    if trades:
        pd = _decimals([t[2] for t in trades])
        qd = _decimals([t[3] for t in trades])
        for ts, side, price, qty, tid in reversed(trades):
            word = "BUY " if side > 0 else "SELL"
            lines.append(
                c(
                    _GREEN if side > 0 else _RED,
                    f"{_clock(ts)}  {word}  {price:,.{pd}f}  {qty:,.{qd}f}  id {tid}",
                )
            )
    else:
        lines.append("(none yet)")
    return "\n".join(lines)


@click.command("tail")
@click.argument("symbol")
@click.option("--instance", help="Instance to read (default: the only one running).")
@click.option("--levels", default=10, show_default=True, help="Book levels per side.")
@click.option("--trades", "n_trades", default=12, show_default=True, help="Trades on the tape.")
@click.option("--feed", help="The [[feeds]] name, when the symbol is on several venues.")
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("--color/--no-color", default=None, help="ANSI colours (default: on a terminal).")
def tail_command(
    symbol: str,
    instance: str | None,
    levels: int,
    n_trades: int,
    feed: str | None,
    once: bool,
    color: bool | None,
) -> None:
    """Watch one symbol's book ladder and trade tape live."""
    from mdpipe.stats import quiet_segment_warnings

    quiet_segment_warnings()
    symbol = symbol.upper()
    name = default_instance(instance)
    book_ring, trade_ring = find_rings(name, symbol, feed)
    if book_ring is None:
        from mdpipe.stats import not_running_message

        rings = list(iter_status(name))
        if not rings:
            raise click.ClickException(not_running_message(name))
        have = sorted({s for st in rings if st.kind == "book" for s in st.symbols})
        where = f"feed {feed!r} of instance {name!r}" if feed else f"instance {name!r}"
        raise click.ClickException(
            f"{symbol} is not in {where}; symbols: {', '.join(have) or 'none'}"
        )
    color = sys.stdout.isatty() if color is None else color
    books = attach(name, book_ring, kind="book")
    trades = attach(name, trade_ring, kind="trade") if trade_ring else None
    tape = Tape(trades, symbol, n_trades)
    tickers = _ticker_reader(name, book_ring, symbol)
    tty = sys.stdout.isatty() and not once
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # restore the terminal on the way out
    try:
        if tty:
            sys.stdout.write("\x1b[?25l\x1b[2J")
        while True:
            tape.update()
            ticker = tickers.latest(symbol) if tickers is not None else None
            frame = render(
                symbol, book_ring, books.latest(symbol), list(tape.trades), levels, color, ticker
            )
            if once:
                click.echo(frame)
                return
            if tty:
                body = "\x1b[K\n".join(frame.split("\n"))
                sys.stdout.write(f"\x1b[H{body}\x1b[K\x1b[J")
            else:
                sys.stdout.write(frame + "\n\n")
            sys.stdout.flush()
            time.sleep(1 / FPS)
    except KeyboardInterrupt:
        pass
    finally:
        if tty:
            sys.stdout.write("\x1b[?25h\n")
        books.close()
        if trades is not None:
            trades.close()
        if tickers is not None:
            tickers.close()


def _ticker_reader(instance: str, book_ring: str, symbol: str) -> Reader | None:
    """The ticker ring beside a book ring (tickers.<feed>.<n>), if it has the symbol."""
    ring = "tickers." + book_ring.split(".", 1)[1] if "." in book_ring else ""
    if not ring:
        return None
    try:
        reader = attach(instance, ring, kind="ticker")
    except (NoSuchRingError, ValueError):
        return None
    if symbol not in reader.symbols:
        reader.close()
        return None
    return reader
