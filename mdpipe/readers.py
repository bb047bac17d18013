"""Reading mdpipe rings from any local process: the public API.

    from mdpipe.readers import attach
    with attach("default", "books") as books:
        print(books.top("BTCUSDT"))          # best bid/ask of the newest synced book
        for rec in books:                    # every record, in order, spinning
            ...

The implementation lives in mdpipe.shm (mapping, stream cursor, conflated view, writer
following); this module is the stable name users import.
"""

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
    "Reader",
    "NoSuchRingError",
    "LayoutError",
    "WriterGoneError",
    "ReaderClosedError",
    "list_instances",
]
