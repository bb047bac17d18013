"""Deterministic mutations of real exchange messages, for fuzzing the feed path."""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson

MutationFn = Callable[[random.Random, bytes], bytes]


def _truncate(rng: random.Random, raw: bytes) -> bytes:
    return raw[: rng.randrange(0, max(1, len(raw) - 1))]


def _flip_byte(rng: random.Random, raw: bytes) -> bytes:
    i = rng.randrange(len(raw))
    return raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :]


def _unicode(rng: random.Random, raw: bytes) -> bytes:
    i = rng.randrange(len(raw))
    junk = rng.choice(["\u202e", "\ud7ff", "€", "\U0001f4a9", "\x00", "\\u0000", "\ufeff"])
    return raw[:i] + junk.encode("utf-8", "surrogatepass") + raw[i:]


_BAD_VALUES = [
    None,
    True,
    [],
    {},
    "",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "-1",
    "-0.0001",
    "0",
    "1e400",
    "1e-400",
    10**30,
    -(10**18),
    2**64,
    1.5,
    "12abc",
    "0x1F",
    " 1 ",
    "1_000",
    "٣",
    [["1", "2"]],
    {"a": 1},
    "9" * 400,
]


def _walk(obj: object, rng: random.Random) -> object:
    """Replace one value somewhere in the decoded message with a bad one."""
    if isinstance(obj, dict) and obj:
        key = rng.choice(list(obj))
        if rng.random() < 0.6 and isinstance(obj[key], dict | list) and obj[key]:
            obj[key] = _walk(obj[key], rng)
        elif rng.random() < 0.2:
            del obj[key]
        else:
            obj[key] = rng.choice(_BAD_VALUES)
        return obj
    if isinstance(obj, list) and obj:
        i = rng.randrange(len(obj))
        if isinstance(obj[i], dict | list) and obj[i] and rng.random() < 0.7:
            obj[i] = _walk(obj[i], rng)
        else:
            obj[i] = rng.choice(_BAD_VALUES)
        return obj
    return rng.choice(_BAD_VALUES)


def _wrong_value(rng: random.Random, raw: bytes) -> bytes:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    try:
        return orjson.dumps(_walk(msg, rng))
    except TypeError:  # an integer orjson cannot write: send it as raw text instead
        return raw.replace(b"}", b',"x":' + str(2**70).encode() + b"}", 1)


def _huge_int(rng: random.Random, raw: bytes) -> bytes:
    # Integers beyond 64 bits, as raw JSON text (orjson cannot emit them).
    return raw.replace(b'"u":', b'"u":' + b"9" * rng.randrange(20, 400) + b',"_u":', 1)


def _deep_nesting(rng: random.Random, raw: bytes) -> bytes:
    depth = rng.choice([64, 1000, 5000, 100_000])
    return raw.replace(b'"b":[', b'"b":' + b"[" * depth + b"]" * (depth - 1) + b',"_b":[', 1)


def _oversized(rng: random.Random, raw: bytes) -> bytes:
    levels = b",".join([b'["1.0","1.0"]'] * rng.choice([10_000, 200_000]))
    return raw.replace(b'"a":[', b'"a":[' + levels + b",", 1)


def _wrong_envelope(rng: random.Random, raw: bytes) -> bytes:
    return rng.choice(
        [
            b"[]",
            b"null",
            b"42",
            b'"text"',
            b'{"stream":"x"}',
            b'{"data":[]}',
            b'{"data":{"e":7}}',
            b'{"stream":"btcusdt@nothing","data":{"e":"nothing"}}',
            b"",
            b"{" * 3,
        ]
    )


MUTATIONS: list[tuple[str, MutationFn]] = [
    ("truncate", _truncate),
    ("flip_byte", _flip_byte),
    ("unicode", _unicode),
    ("wrong_value", _wrong_value),
    ("huge_int", _huge_int),
    ("deep_nesting", _deep_nesting),
    ("oversized", _oversized),
    ("wrong_envelope", _wrong_envelope),
]
WEIGHTS = [20, 15, 10, 40, 5, 3, 1, 6]


def mutate(rng: random.Random, raw: bytes, max_bytes: int | None = None) -> tuple[str, bytes]:
    """One mutation of raw, chosen by weight; returns (mutation name, bytes).

    max_bytes: draw again until the result is no longer than that (a live feed fuzzed with
    100,000 frames cannot afford a thousand multi-megabyte ones).
    """
    while True:
        name, fn = rng.choices(MUTATIONS, WEIGHTS)[0]
        out = fn(rng, raw)
        if max_bytes is None or len(out) <= max_bytes:
            return name, out
