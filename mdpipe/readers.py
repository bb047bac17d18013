"""Reading mdpipe rings from any local process: the public API.

    from mdpipe.readers import attach
    with attach("default", "books") as books:
        print(books.top("BTCUSDT"))          # best bid/ask of the newest synced book
        for rec in books:                    # every record, in order, spinning
            ...
    with attach("default", "tickers") as tickers:
        print(tickers.latest("BTCUSDT")["mark_price"])
    print(candles("default", "BTCUSDT", "1m")[-1])   # the newest 1-minute candle

The implementation lives in mdpipe.shm (mapping, stream cursor, conflated view, writer
following); this module is the stable name users import.
"""

from mdpipe.candle_reader import candles
from mdpipe.shm.reader import (
    NoSuchRingError,
    Reader,
    ReaderClosedError,
    WriterGoneError,
    attach,
    list_instances,
)
from mdpipe.shm.segment import LayoutError

__all__ = [
    "attach",
    "candles",
    "Reader",
    "NoSuchRingError",
    "LayoutError",
    "WriterGoneError",
    "ReaderClosedError",
    "list_instances",
]
