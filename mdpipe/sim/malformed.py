"""Bad messages for the `malformed` fault, shaped like the stream they are injected into
(depth, trades, bookTicker, markPrice and the 24 h ticker)."""

from __future__ import annotations

from typing import Any

import orjson

from mdpipe.sim.formats import envelope
from mdpipe.sim.instruments import FUTURES


def _base(kind: str, market: str, symbol: str, last_id: int, now_ms: int) -> dict[str, Any]:
    """A well-formed-looking payload of the stream's kind, to be broken by a variant.

    Depth payloads claim the next update id (U = u = last + 1, pu = last): a client that
    rejects the message keeps its sequence intact, one that applies it sees the gap next.
    """
    futures = market == FUTURES
    if kind.startswith("depth"):
        body: dict[str, Any] = {"e": "depthUpdate", "E": now_ms}
        if futures:
            body["T"] = now_ms
        body.update({"s": symbol, "U": last_id + 1, "u": last_id + 1})
        if futures:
            body["pu"] = last_id
        body.update({"b": [["1.00", "1.000"]], "a": []})
        return body
    if kind.startswith("bookTicker"):
        head = {"e": "bookTicker", "u": last_id + 1, "E": now_ms, "T": now_ms} if futures else {}
        return {
            **head,
            "u": last_id + 1,
            "s": symbol,
            "b": "1.00",
            "B": "1.000",
            "a": "2.00",
            "A": "1.000",
        }
    if kind.startswith("aggTrade"):
        return {"e": "aggTrade", "E": now_ms, "s": symbol, "a": 1, "p": "1.00", "q": "1.000",
                "f": 1, "l": 1, "T": now_ms, "m": False}  # fmt: skip
    if kind == "ticker":
        body = {"e": "24hrTicker", "E": now_ms, "s": symbol, "p": "-1.00", "P": "-0.500",
                "w": "1.00"}  # fmt: skip
        if not futures:
            body["x"] = "1.00"
        body.update({"c": "1.00", "Q": "1.000"})
        if not futures:
            body.update({"b": "1.00", "B": "1.000", "a": "2.00", "A": "1.000"})
        body.update({"o": "2.00", "h": "2.00", "l": "1.00", "v": "1.000", "q": "1.00000",
                     "O": now_ms - 86_400_000, "C": now_ms, "F": 1, "L": 1, "n": 1})  # fmt: skip
        return body
    if kind.startswith("markPrice"):
        return {"e": "markPriceUpdate", "E": now_ms, "s": symbol, "p": "1.00", "i": "1.00",
                "P": "1.00", "r": "0.00010000", "T": now_ms}  # fmt: skip
    return {"e": "trade", "E": now_ms, "T": now_ms, "s": symbol, "t": 1, "p": "1.00",
            "q": "1.000", "X": "MARKET", "m": False}  # fmt: skip


def _price_key(body: dict[str, Any]) -> str:
    """The price a client reads: the last price of a ticker, a diff's bids, else `p`."""
    if body.get("e") == "24hrTicker":
        return "c"
    return "b" if "b" in body else "p"


def malformed_message(
    variant: str,
    stream: str,
    combined: bool,
    market: str,
    last_id: int,
    now_ms: int,
    oversized_bytes: int,
) -> bytes:
    """One bad message for a client subscribed to `stream` (raw payload or envelope);
    variant "none" gives the well-formed message the variants break."""
    symbol_lower, _, kind = stream.partition("@")
    symbol = symbol_lower.upper()
    body = _base(kind, market, symbol, last_id, now_ms)
    key = _price_key(body)
    if variant in ("nan_price", "negative_price"):
        bad = "NaN" if variant == "nan_price" else "-1.00"
        if isinstance(body[key], list):
            body[key] = [[bad, "1.000"]]
        else:
            body[key] = bad
    elif variant == "missing_field":
        del body["u" if "u" in body else key]
    elif variant == "wrong_type":
        body[key] = {"price": 1} if isinstance(body[key], list) else 1.5
        if "u" in body:
            body["u"] = str(body["u"])
    elif variant == "unknown_stream":
        stream = f"{symbol_lower}@nosuchstream"
        body = {"e": "nosuchEvent", "E": now_ms, "s": symbol}
    elif variant == "oversized":
        body = {"e": body.get("e", "depthUpdate"), "E": now_ms, "s": symbol, "pad": ""}
        body["pad"] = "x" * max(oversized_bytes - 200, 0)
    payload = orjson.dumps(body)
    message = envelope(stream, payload) if combined else payload
    if variant == "truncated":
        return message[: len(message) // 2]
    return message


def break_price_text(good: bytes, variant: str, price: bytes = b'"100.0"') -> bytes | None:
    """The text-level variants applied to a well-formed frame whose one price is `price`
    (quoted): truncated, nan_price, negative_price; None for any other variant."""
    if variant == "truncated":
        return good[: len(good) // 2]
    if variant == "nan_price":
        return good.replace(price, b'"NaN"')
    if variant == "negative_price":
        return good.replace(price, b'"-' + price[1:])
    return None
