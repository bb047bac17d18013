"""OKX v5 public endpoints, symbols, limits, error codes and the connection plan (no I/O).

The plan puts every instrument's channels (`books`, the top-of-book channel, `trades`) on
the same connection, so the venue's push order per connection and instId holds for them
(bbo-tbt before books), and keeps each connection under the documented limits: fewer than
30 deep-book channels, subscribe messages of at most 64 KB, and a subscribe-op budget of
480 per connection-hour of which the initial subscription uses only a few.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

import orjson

from mdpipe.instrument import Instrument

SWAP = "swap"
SPOT = "spot"
MARKETS = (SWAP, SPOT)

WS_BASE = "wss://ws.okx.com:8443"
WS_PATH = "/ws/v5/public"
REST_BASE = "https://openapi.okx.com"
BOOKS_PATH = "/api/v5/market/books"

BOOKS = "books"
BBO_TBT = "bbo-tbt"
BOOKS5 = "books5"
TRADES = "trades"
TICKERS = "tickers"
MARK_PRICE = "mark-price"
FUNDING_RATE = "funding-rate"
OPEN_INTEREST = "open-interest"
SWAP_TICKER_CHANNELS = (MARK_PRICE, FUNDING_RATE, OPEN_INTEREST)  # swaps only
TOP_CHANNELS = (BBO_TBT, BOOKS5)

MAX_SUBSCRIBE_BYTES = 64 * 1024  # channels in one subscribe message
MAX_DEEP_BOOKS_PER_CONNECTION = 29  # "fewer than 30" deep-book channels per connection
SUBSCRIBE_OPS_PER_HOUR = 480  # subscribe + unsubscribe + login, per connection
NEW_CONNECTIONS_PER_SECOND = 3  # per IP
REST_BOOKS_MAX_SZ = 400
IDLE_CLOSE_S = 30.0  # the server closes a connection that received nothing for this long
PING_AFTER_S = 20.0  # the longest wait between our text pings (must be < IDLE_CLOSE_S)
UPGRADE_NOTICE = "64008"  # {"event":"notice"} ~60 s before a service-upgrade cut

# Error codes of the public WebSocket, with what they mean for us.
ERROR_CODES: dict[str, str] = {
    "60012": "invalid request (a malformed subscribe message or argument)",
    "60018": "the channel or instId does not exist on this URL",
    "64001": "this channel is served on /ws/v5/business, not /ws/v5/public",
    "64003": "the account's trading-fee tier is too low for this channel (use `books`)",
    UPGRADE_NOTICE: "service upgrade: this connection will be cut in about 60 s",
}

_SWAP_ID = re.compile(r"([A-Z0-9]{1,15})-([A-Z0-9]{1,15})-SWAP")
_SPOT_ID = re.compile(r"([A-Z0-9]{1,15})-([A-Z0-9]{1,15})")


def check_market(market: str) -> None:
    """Raise ValueError unless `market` is "swap" or "spot"."""
    if market not in MARKETS:
        raise ValueError(f"OKX market must be one of {MARKETS}, got {market!r}")


def exchange_name(market: str) -> str:
    """The exchange field of a segment header: "okx-swap" or "okx-spot"."""
    check_market(market)
    return f"okx-{market}"


def instrument(inst_id: str, market: str) -> Instrument:
    """The normalized instrument of an OKX instId; ValueError names the expected form."""
    check_market(market)
    if market == SWAP:
        m = _SWAP_ID.fullmatch(inst_id)
        form, kind = "BASE-QUOTE-SWAP, e.g. BTC-USDT-SWAP", "perp"
    else:
        m = _SPOT_ID.fullmatch(inst_id)
        form, kind = "BASE-QUOTE, e.g. BTC-USDT", "spot"
    if m is None:
        raise ValueError(f"OKX {market} instId {inst_id!r} must look like {form}")
    return Instrument(m.group(1), m.group(2), kind).validate()


def describe_error(code: str, msg: str = "") -> str:
    """A one-line explanation of an OKX error or notice code, for the log."""
    meaning = ERROR_CODES.get(code, "undocumented code")
    return f"OKX {code}: {meaning}" + (f" (server said: {msg})" if msg else "")


class Arg(NamedTuple):
    """One subscription argument: a channel of one instrument."""

    channel: str
    inst_id: str

    def to_json(self) -> dict[str, str]:
        """The argument as OKX writes it."""
        return {"channel": self.channel, "instId": self.inst_id}


class Connection(NamedTuple):
    """One WebSocket connection to open: its URL, what it carries, how to subscribe it."""

    url: str
    args: tuple[Arg, ...]

    @property
    def inst_ids(self) -> list[str]:
        """The instruments whose book this connection carries."""
        return [a.inst_id for a in self.args if a.channel == BOOKS]

    def subscribe_messages(self, request_id: str = "s") -> list[bytes]:
        """One subscribe message per instrument (all its channels): OKX refuses a whole
        request for one bad argument, so a delisted instId must not take the others down.
        Ids are `<request_id><n>`; each message is far below 64 KB."""
        by_inst: dict[str, list[Arg]] = {}
        for arg in self.args:
            by_inst.setdefault(arg.inst_id, []).append(arg)
        messages = []
        for n, args in enumerate(by_inst.values(), 1):
            messages += op_messages("subscribe", args, f"{request_id}{n}x")
        return messages


def op_messages(op: str, args: Iterable[Arg], request_id: str = "s") -> list[bytes]:
    """`{"id":..,"op":op,"args":[...]}` messages holding `args`, each at most 64 KB.

    Ids are `<request_id><n>` (OKX allows 1-32 letters and digits), one per message.
    """
    if op not in ("subscribe", "unsubscribe"):
        raise ValueError(f"op must be subscribe or unsubscribe, got {op!r}")
    messages: list[bytes] = []
    chunk: list[dict[str, str]] = []
    size = 0

    def flush() -> None:
        nonlocal chunk, size
        if chunk:
            rid = f"{request_id}{len(messages) + 1}"
            messages.append(orjson.dumps({"id": rid, "op": op, "args": chunk}))
        chunk, size = [], 0

    overhead = 64  # {"id":"...","op":"unsubscribe","args":[]}
    for arg in args:
        item = arg.to_json()
        item_size = len(orjson.dumps(item)) + 1
        if size + item_size + overhead > MAX_SUBSCRIBE_BYTES:
            flush()
        chunk.append(item)
        size += item_size
    flush()
    return messages


def plan_connections(
    market: str,
    inst_ids: Iterable[str],
    top_channel: str | None = BBO_TBT,
    trades: bool = True,
    ws_base: str | None = None,
    max_books: int = MAX_DEEP_BOOKS_PER_CONNECTION,
    tickers: bool = False,
) -> list[Connection]:
    """The public connections for these instruments, at most `max_books` books each.

    tickers adds `tickers` and, on swaps, `mark-price`, `funding-rate` and `open-interest`
    to each instrument's arguments (the same subscribe messages: no extra ops).
    """
    check_market(market)
    if top_channel is not None and top_channel not in TOP_CHANNELS:
        raise ValueError(f"top_channel must be one of {TOP_CHANNELS} or None, got {top_channel!r}")
    if not 1 <= max_books <= MAX_DEEP_BOOKS_PER_CONNECTION:
        raise ValueError(f"max_books must be 1..{MAX_DEEP_BOOKS_PER_CONNECTION}, got {max_books}")
    ids = list(inst_ids)
    if not ids:
        raise ValueError("no instIds given")
    for inst_id in ids:
        instrument(inst_id, market)
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate instIds in {ids}")
    url = (ws_base or WS_BASE).rstrip("/") + WS_PATH
    conns = []
    for start in range(0, len(ids), max_books):
        args: list[Arg] = []
        for inst_id in ids[start : start + max_books]:
            if top_channel is not None:
                args.append(Arg(top_channel, inst_id))
            args.append(Arg(BOOKS, inst_id))
            if trades:
                args.append(Arg(TRADES, inst_id))
            if tickers:
                args.append(Arg(TICKERS, inst_id))
                if market == SWAP:
                    args.extend(Arg(ch, inst_id) for ch in SWAP_TICKER_CHANNELS)
        conns.append(Connection(url, tuple(args)))
    return conns


def books_url(inst_id: str, sz: int = REST_BOOKS_MAX_SZ, rest_base: str | None = None) -> str:
    """The REST order-book URL (`GET /api/v5/market/books?instId=..&sz=..`, sz <= 400)."""
    if not 1 <= sz <= REST_BOOKS_MAX_SZ:
        raise ValueError(f"OKX REST books sz must be 1..{REST_BOOKS_MAX_SZ}, got {sz}")
    if not _SPOT_ID.fullmatch(inst_id) and not _SWAP_ID.fullmatch(inst_id):
        raise ValueError(f"bad OKX instId {inst_id!r}")
    return f"{(rest_base or REST_BASE).rstrip('/')}{BOOKS_PATH}?instId={inst_id}&sz={sz}"
