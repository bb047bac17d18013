"""Book payloads: the C printer and the batch path give exactly the bytes of orjson on the dict."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from mdpipe.publisher import payloads as P
from mdpipe.shm import layout as L

SYMBOLS = ["BTCUSDT", "ETH-USDT-SWAP", 'we"ird\\sym', "ÄÖ%d%b", "x"]


def reference(rec: np.void, st: P.SymbolState, levels: int) -> bytes:
    """The payload as the format defines it: orjson on the dict, levels as Python floats."""
    nb = min(int(rec["bid_count"]), levels)
    na = min(int(rec["ask_count"]), levels)
    return orjson.dumps(
        {
            "symbol": st.symbol,
            "exchange": st.exchange,
            "bids": rec["bids"][:nb].tolist(),
            "asks": rec["asks"][:na].tolist(),
            "first_update_id": int(rec["first_update_id"]),
            "last_update_id": int(rec["last_update_id"]),
            "seq": int(rec["symbol_seq"]),
            "synced": bool(int(rec["flags"]) & L.FLAG_SYNCED),
            "exchange_ts": int(rec["exchange_ts_ns"]),
            "timestamp": int(rec["commit_ts_ns"]),
        }
    )


def records(rng: np.random.Generator, n: int, depth: int, values: np.ndarray) -> np.ndarray:
    recs = np.zeros(n, L.book_dtype(depth))
    recs["symbol_id"] = rng.integers(0, len(SYMBOLS), n)
    recs["flags"] = rng.integers(0, 4, n)
    recs["bid_count"] = rng.choice([depth, depth, depth, 0, 1], n)
    recs["ask_count"] = rng.choice([depth, depth, depth, 0], n)
    recs["bids"] = rng.choice(values, recs["bids"].shape)
    recs["asks"] = rng.choice(values, recs["asks"].shape)
    for field in ("first_update_id", "last_update_id", "symbol_seq", "commit_ts_ns"):
        recs[field] = rng.integers(0, 2**62, n)
    recs["exchange_ts_ns"] = rng.integers(-(2**62), 2**62, n)
    recs["first_update_id"][0] = 2**64 - 1
    return recs


def decimals(rng: np.random.Generator) -> np.ndarray:
    """Prices and sizes as venues send them: decimal text parsed to the nearest double."""
    out = []
    for places in range(9):
        ints = rng.integers(0, 10**12, 200, dtype=np.int64)
        out.append(np.array([float(f"{k / 10**places:.{places}f}") for k in ints]))
    return np.concatenate([*out, [0.0, -0.0, 1e-4, 0.0001234, 99999999999999.9, 42.0]])


def awkward(rng: np.random.Generator) -> np.ndarray:
    """Numbers the C printer leaves to orjson: 16-17 digits, tiny, huge, not finite."""
    bits = rng.integers(0, 2**63, 200, dtype=np.int64).view(np.float64)
    extra = [0.1 + 0.2, 1 / 3, 1e-5, 1e-7, 1e15, 1e16, 1e300, 5e-324, np.inf, -np.inf, np.nan]
    return np.concatenate([bits, extra, 61_800.2 - np.arange(20) * 0.1])


@pytest.mark.parametrize("printer", ["c", "orjson"])
@pytest.mark.parametrize("kind", ["decimal", "awkward", "mixed"])
def test_book_payloads_are_exactly_orjson_of_the_dict(printer, kind, monkeypatch):
    if printer == "c":
        assert P._c_books is not None, "the C printer was not built"
    else:
        monkeypatch.setattr(P, "_c_books", None)
    rng = np.random.default_rng(5)
    dec, odd = decimals(rng), awkward(rng)
    values = {"decimal": dec, "awkward": odd, "mixed": np.concatenate([dec, odd[:5]])}[kind]
    for depth, levels in ((20, 20), (20, 5), (5, 20), (1, 1)):
        table = [P.SymbolState(s, "binance-futures") for s in SYMBOLS]
        recs = records(rng, 300, depth, values)
        got = P.book_payloads(recs, table, levels)
        want = [reference(rec, table[int(rec["symbol_id"])], levels) for rec in recs]
        assert got == want


def test_the_c_printer_writes_numbers_as_orjson_or_leaves_them():
    from mdpipe.publisher._json import books

    rng = np.random.default_rng(9)
    dec = decimals(rng)
    values = np.concatenate([dec, awkward(rng), 10.0 ** rng.uniform(-6, 17, 5000)])
    values = values[: len(values) // 2 * 2].reshape(-1, 1, 2)
    n = len(values)
    head = b'{"symbol":"X","exchange":"Y","bids":'
    ones = [1] * n
    out = books([head] * n, values, values, ones, ones, *([ones] * 3), [True] * n, [2] * n, [3] * n)
    fast = 0
    for side, payload in zip(values, out, strict=True):
        if payload is None:
            continue
        fast += 1
        levels = orjson.dumps(side.tolist())[2:-2]
        assert payload.startswith(head + b"[[" + levels + b']],"asks":[[' + levels + b"]]")
    assert fast >= len(dec) // 2 - 1  # every decimal pair at least


def test_the_c_printer_refuses_what_it_cannot_print():
    from mdpipe.publisher._json import books

    side = np.zeros((1, 2, 2))
    with pytest.raises(ValueError, match="float64"):
        books([b"{"], side.astype(np.float32), side, [2], [2], [1], [1], [1], [True], [1], [1])
    with pytest.raises(TypeError, match="11 arguments"):
        books([b"{"], side)
    with pytest.raises(TypeError):
        books([b"{"], side, side, [2], [2], ["1"], [1], [1], [True], [1], [1])
    with pytest.raises(ValueError, match="level count"):
        books([b"{"], side, side, [3], [2], [1], [1], [1], [True], [1], [1])
    big = books([b"{"], side, side, [2], [2], [2**64], [1], [1], [True], [1], [1])
    assert big == [None]  # past 64 bits: left to orjson
