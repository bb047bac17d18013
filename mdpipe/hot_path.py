"""The ingest's hot path, C or pure Python: the book (mdpipe/_book.c or mdpipe/book.py) and
the level readers (mdpipe/venues/_levels.c or levels.py and okx/parser.py).

Each module picks the C code when it is built, unless MDPIPE_BOOK=python. `use(path)`
rebinds, for one block, every name through which the parsers and LocalBook reach the hot
path, so one process can run both (the differential tests and bench/ingest_throughput.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mdpipe import book
from mdpipe.venues import levels, local_book
from mdpipe.venues.binance import wire as binance_wire
from mdpipe.venues.bybit import wire as bybit_wire
from mdpipe.venues.okx import parser as okx_parser

C, PYTHON = "c", "python"
PATHS = (C, PYTHON)
IMPLEMENTATION = (
    C if book.IMPLEMENTATION == levels.IMPLEMENTATION == okx_parser.IMPLEMENTATION == C else PYTHON
)


def implementations(path: str) -> dict[str, Any]:
    """The hot path's objects of one implementation by name (ImportError: C is not built)."""
    if path == C:
        plain_books, plain_text = okx_parser.c_plain_books_readers()
        return {
            "OrderBook": book.c_order_book(),
            "plain_levels": levels.c_plain_levels_reader(),
            "plain_books": plain_books,
            "plain_text": plain_text,
        }
    if path == PYTHON:
        return {
            "OrderBook": book.PyOrderBook,
            "plain_levels": levels.py_plain_levels,
            "plain_books": okx_parser.py_plain_books,
            "plain_text": okx_parser.py_plain_text,
        }
    raise ValueError(f"hot path must be one of {PATHS}, got {path!r}")


# (module, name) pairs that hold a hot-path object, bound at import.
_BOUND = (
    (book, "OrderBook"),
    (local_book, "OrderBook"),
    (levels, "plain_levels"),
    (binance_wire, "plain_levels"),
    (bybit_wire, "plain_levels"),
    (okx_parser, "plain_books"),
    (okx_parser, "plain_text"),
)


@contextmanager
def use(path: str) -> Iterator[None]:
    """Run the block on one implementation of the hot path (not thread-safe: process-wide)."""
    objects = implementations(path)
    saved = [getattr(module, name) for module, name in _BOUND]
    for module, name in _BOUND:
        setattr(module, name, objects[name])
    try:
        yield
    finally:
        for (module, name), obj in zip(_BOUND, saved, strict=True):
            setattr(module, name, obj)
