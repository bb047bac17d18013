"""OKX v5 public as the simulator speaks it: instruments, JSON payloads, requests, REST answers.

Byte-exact to the documented formats (compact JSON, the documented field order):
- WebSocket `/ws/v5/public`: `{"id","op":"subscribe"|"unsubscribe","args":[...]}` answered
  per argument by `{"id","event":"subscribe","arg":{...},"connId":...}`, errors as
  `{"id","event":"error","code":"600xx","msg":...,"connId":...}`; text `ping` -> `pong`.
- Pushes: `books` (`action` snapshot|update, levels `[px, sz, "0", orders]`, `checksum`,
  `prevSeqId`, `seqId`), `bbo-tbt` and `books5` (whole top, with seqId), `trades` (one
  message per taker order and price: `tradeId` is the last fill, `count` the fills, `side`
  the taker's side).
- REST `GET /api/v5/market/books?instId=..&sz=..` (sz 1..400, default 1) ->
  `{"code":"0","msg":"","data":[{"asks","bids","ts","seqId"}]}`; business errors are HTTP
  200 with a non-zero code; `GET /api/v5/public/instruments?instType=SWAP|SPOT`.

Numbers are written as OKX writes them: decimal strings without trailing zeros ("64000.1",
"3366", "0.5"); SWAP sizes are contracts (see `ctVal` in the instruments answer).

Readings chosen where the docs say nothing: the idle close uses code 4004 ("No data
received in 30s"); more than 480 subscribe ops in an hour or a subscribe message over 64 KB
is refused with error 60012 and the connection stays open; a 4th new connection in one
second is refused at the handshake with HTTP 429.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from mdpipe.sim.instruments import FUTURES, SPOT, SymbolSpec, symbol_spec
from mdpipe.sim.orderbook import Book
from mdpipe.venues.okx.checksum import CHECKSUM_LEVELS, book_checksum
from mdpipe.venues.okx.protocol import MAX_SUBSCRIBE_BYTES, WS_PATH

PUBLIC_PATH = WS_PATH
BUSINESS_PATH = "/ws/v5/business"
INSTRUMENTS_PATH = "/api/v5/public/instruments"
CHANNELS = (
    "books",
    "bbo-tbt",
    "books5",
    "trades",
    "tickers",
    "mark-price",
    "funding-rate",
    "open-interest",
)
SWAP_ONLY_CHANNELS = ("mark-price", "funding-rate", "open-interest")
CANDLE_CHANNELS = {"candle1s": 1000, "candle1m": 60_000}  # on /business: interval in ms
VIP_CHANNELS = ("books-l2-tbt", "books50-l2-tbt", "books-elp")  # need login and a fee tier
BUSINESS_CHANNELS_PREFIX = ("candle", "trades-all")

# (price, tick, lot, typical resting size, ctVal) in human units; SWAP sizes are contracts.
_SWAP: dict[str, tuple[str, str, str, str, str]] = {
    "BTC": ("61800", "0.1", "0.01", "30", "0.01"),
    "ETH": ("2650", "0.01", "0.01", "20", "0.1"),
    "SOL": ("150", "0.01", "0.01", "50", "1"),
}
_SPOT: dict[str, tuple[str, str, str, str]] = {
    "BTC": ("61800", "0.1", "0.00000001", "0.3"),
    "ETH": ("2650", "0.01", "0.000001", "2"),
    "SOL": ("150", "0.01", "0.000001", "50"),
}


def _decimals(text: str) -> int:
    return len(text.partition(".")[2])


def _units(text: str, decimals: int) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 10**decimals + int((frac + "0" * decimals)[:decimals] or "0")


def okx_number(units: int, decimals: int) -> str:
    """An integer count of 10**-decimals units as OKX writes it: no trailing zeros."""
    if decimals == 0:
        return str(units)
    whole, frac = divmod(units, 10**decimals)
    digits = f"{frac:0{decimals}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


@dataclass(frozen=True)
class OkxInstrument:
    """One simulated OKX instrument: its instId, kind, filters and the spec the market uses."""

    inst_id: str
    swap: bool
    spec: SymbolSpec
    tick_sz: str
    lot_sz: str
    ct_val: str  # "" on spot

    def px(self, ticks: int) -> str:
        """A price in ticks as OKX writes it."""
        return okx_number(ticks * self.spec.tick, self.spec.price_decimals)

    def sz(self, lots: int) -> str:
        """A size in lots as OKX writes it (contracts on SWAP)."""
        return okx_number(lots * self.spec.step, self.spec.qty_decimals)


def okx_instrument(inst_id: str, seed: int = 1) -> OkxInstrument:
    """The simulated instrument of an instId (BTC-USDT-SWAP, BTC-USDT); ValueError if malformed."""
    parts = inst_id.split("-")
    swap = len(parts) == 3 and parts[2] == "SWAP"
    if not (len(parts) == 2 or swap) or not all(p.isalnum() and p.isupper() for p in parts[:2]):
        raise ValueError(f"bad OKX instId {inst_id!r} (BTC-USDT-SWAP or BTC-USDT)")
    base, quote = parts[0], parts[1]
    known = _SWAP.get(base) if swap else _SPOT.get(base)
    if known is None:
        # A plausible instrument derived from Binance's table or the symbol's hash.
        derived = symbol_spec(base + quote, FUTURES if swap else SPOT, seed)
        price = okx_number(derived.price, derived.price_decimals)
        tick = okx_number(derived.tick, derived.price_decimals)
        lot = okx_number(derived.step, derived.qty_decimals)
        size = okx_number(derived.lot_median * derived.step, derived.qty_decimals)
        known = (price, tick, lot, size, "1") if swap else (price, tick, lot, size)
    price, tick, lot, size = known[:4]
    ct_val = known[4] if swap else ""
    pdec, qdec = _decimals(tick), _decimals(lot)
    tick_units, step_units = _units(tick, pdec), _units(lot, qdec)
    spec = SymbolSpec(
        symbol=inst_id,
        price_decimals=pdec,
        qty_decimals=qdec,
        tick=tick_units,
        step=step_units,
        price=_units(price, pdec) // tick_units * tick_units,
        lot_median=max(_units(size, qdec) // step_units, 1),
    )
    return OkxInstrument(inst_id, swap, spec, tick, lot, ct_val)


Levels = list[list[str]]


def book_levels(inst: OkxInstrument, book: Book, limit: int) -> tuple[Levels, Levels]:
    """The best `limit` bids (descending) and asks (ascending) as OKX levels."""
    bids = [[inst.px(p), inst.sz(q), "0", str(1 + q % 7)] for p, q in book.bids.top(limit)]
    asks = [[inst.px(p), inst.sz(q), "0", str(1 + q % 7)] for p, q in book.asks.top(limit)]
    return bids, asks


def changed_levels(inst: OkxInstrument, changes: dict[int, int], descending: bool) -> Levels:
    """Changed levels of one side, best first; size "0" (and 0 orders) deletes."""
    prices = sorted(changes, reverse=descending)
    return [
        [inst.px(p), inst.sz(changes[p]), "0", str(1 + changes[p] % 7) if changes[p] else "0"]
        for p in prices
    ]


def checksum_of(inst: OkxInstrument, book: Book) -> int:
    """The legacy checksum of the simulator's book (top 25 per side, as OKX writes them)."""
    bids = [f"{inst.px(p)}:{inst.sz(q)}" for p, q in book.bids.top(CHECKSUM_LEVELS)]
    asks = [f"{inst.px(p)}:{inst.sz(q)}" for p, q in book.asks.top(CHECKSUM_LEVELS)]
    return book_checksum(bids, asks)


def books_push(
    inst_id: str,
    action: str,
    asks: Levels,
    bids: Levels,
    ts_ms: int,
    checksum: int,
    prev_seq: int | None,
    seq: int | None,
) -> bytes:
    """A `books` push; seqId/prevSeqId are left out when None (legacy data without them)."""
    data: dict[str, Any] = {"asks": asks, "bids": bids, "ts": str(ts_ms), "checksum": checksum}
    if prev_seq is not None:
        data["prevSeqId"] = prev_seq
    if seq is not None:
        data["seqId"] = seq
    return orjson.dumps(
        {"arg": {"channel": "books", "instId": inst_id}, "action": action, "data": [data]}
    )


def top_push(channel: str, inst_id: str, asks: Levels, bids: Levels, ts_ms: int, seq: int) -> bytes:
    """A `bbo-tbt` (top 1) or `books5` (top 5) push: always the whole top, no action."""
    data: dict[str, Any] = {"asks": asks, "bids": bids, "ts": str(ts_ms), "seqId": seq}
    if channel == "books5":
        data = {"asks": asks, "bids": bids, "instId": inst_id, "ts": str(ts_ms), "seqId": seq}
    return orjson.dumps({"arg": {"channel": channel, "instId": inst_id}, "data": [data]})


def trades_push(
    inst_id: str, trade_id: int, px: str, sz: str, side: str, ts_ms: int, count: int, seq: int
) -> bytes:
    """A `trades` push of one taker order at one price."""
    return orjson.dumps(
        {
            "arg": {"channel": "trades", "instId": inst_id},
            "data": [
                {
                    "instId": inst_id,
                    "tradeId": str(trade_id),
                    "px": px,
                    "sz": sz,
                    "side": side,
                    "ts": str(ts_ms),
                    "count": str(count),
                    "source": "0",
                    "seqId": seq,
                }
            ],
        }
    )


def ack(request_id: str | None, op: str, arg: dict[str, str], conn_id: str) -> bytes:
    """The answer to one subscribe/unsubscribe argument."""
    body: dict[str, Any] = {}
    if request_id is not None:
        body["id"] = request_id
    body.update({"event": op, "arg": arg, "connId": conn_id})
    return orjson.dumps(body)


def error_event(request_id: str | None, code: str, msg: str, conn_id: str) -> bytes:
    """`{"event":"error"}`: a refused request."""
    body: dict[str, Any] = {}
    if request_id is not None:
        body["id"] = request_id
    body.update({"event": "error", "code": code, "msg": msg, "connId": conn_id})
    return orjson.dumps(body)


def notice(code: str, msg: str, conn_id: str) -> bytes:
    """`{"event":"notice"}`, e.g. 64008 before a service-upgrade cut."""
    return orjson.dumps({"event": "notice", "code": code, "msg": msg, "connId": conn_id})


def rest_books(asks: Levels, bids: Levels, ts_ms: int, seq: int) -> bytes:
    """The REST books answer (no checksum; seqId of the book it shows)."""
    return orjson.dumps(
        {
            "code": "0",
            "msg": "",
            "data": [{"asks": asks, "bids": bids, "ts": str(ts_ms), "seqId": seq}],
        }
    )


def rest_error(code: str, msg: str) -> bytes:
    """An OKX REST error body."""
    return orjson.dumps({"code": code, "msg": msg, "data": []})


def rest_instruments(instruments: list[OkxInstrument]) -> bytes:
    """The public instruments answer for these instruments (the fields a client needs)."""
    data = []
    for inst in instruments:
        base, quote = inst.inst_id.split("-")[:2]
        data.append(
            {
                "instType": "SWAP" if inst.swap else "SPOT",
                "instId": inst.inst_id,
                "uly": f"{base}-{quote}" if inst.swap else "",
                "baseCcy": "" if inst.swap else base,
                "quoteCcy": "" if inst.swap else quote,
                "settleCcy": quote if inst.swap else "",
                "ctVal": inst.ct_val,
                "ctMult": "1" if inst.swap else "",
                "ctValCcy": base if inst.swap else "",
                "ctType": "linear" if inst.swap else "",
                "tickSz": inst.tick_sz,
                "lotSz": inst.lot_sz,
                "minSz": inst.lot_sz,
                "state": "live",
            }
        )
    return orjson.dumps({"code": "0", "msg": "", "data": data})


# ----- client requests ------------------------------------------------------------------


@dataclass
class Request:
    """One parsed client message: an op with its args, or an error to answer."""

    request_id: str | None
    op: str
    args: list[dict[str, str]]
    error: tuple[str, str] | None = None  # (code, msg) to answer instead


MAX_REQUEST_BYTES = MAX_SUBSCRIBE_BYTES


def parse_request(text: str | bytes) -> Request:
    """A client's subscribe/unsubscribe message, validated as OKX does."""
    if len(text) > MAX_REQUEST_BYTES:
        return Request(None, "", [], ("60012", "Invalid request: channels exceed 64 KB"))
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Request(None, "", [], ("60012", f"Invalid request: {_quote(text)}"))
    if type(msg) is not dict:
        return Request(None, "", [], ("60012", f"Invalid request: {_quote(text)}"))
    rid = msg.get("id")
    if rid is not None and (type(rid) is not str or not rid.isalnum() or len(rid) > 32):
        return Request(None, "", [], ("60012", f"Invalid request: {_quote(text)}"))
    op, args = msg.get("op"), msg.get("args")
    if op not in ("subscribe", "unsubscribe") or type(args) is not list or not args:
        return Request(rid, "", [], ("60012", f"Invalid request: {_quote(text)}"))
    for arg in args:
        if type(arg) is not dict or type(arg.get("channel")) is not str:
            return Request(rid, op, [], ("60012", f"Invalid request: {_quote(text)}"))
    return Request(rid, op, args)


def _quote(text: str | bytes) -> str:
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return raw[:200]


def check_arg(arg: dict[str, str], path: str, inst_ids: set[str]) -> tuple[str, str] | None:
    """The error (code, msg) for one subscribe argument on this URL path, or None if served."""
    channel, inst_id = arg.get("channel", ""), arg.get("instId")
    if path == BUSINESS_PATH:
        if channel in CANDLE_CHANNELS and inst_id in inst_ids:
            return None
        return "60018", f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist"
    if channel.startswith(BUSINESS_CHANNELS_PREFIX):
        return "64001", f"{channel} channel has moved to the /business URL"
    if channel in VIP_CHANNELS:
        return "64003", "Your trading fee tier doesn't meet the requirement to access this channel"
    if channel not in CHANNELS or inst_id not in inst_ids:
        return "60018", f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist"
    if channel in SWAP_ONLY_CHANNELS and not inst_id.endswith("-SWAP"):
        return "60018", f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist"
    return None
