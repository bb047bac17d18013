"""History: the rings archived to Parquet, queried with DuckDB, replayed into rings.

    from mdpipe import history
    t = history.trades("BTCUSDT", "2026-12-01", "2026-12-02")            # pyarrow.Table
    df = history.books("BTCUSDT", "2026-12-01T10:00", "2026-12-01T11:00", as_="pandas")
    f = history.tickers("BTCUSDT", "2026-12-01", columns=["mark_price", "funding_rate"])
    bars = history.candles("BTCUSDT", "2026-12-01", interval="1m", as_="numpy")

Modules: store (files, partitions, the atomic commit), schema (columns), archiver (the
supervised process tailing the rings), query (DuckDB over the files), replay (archived
records back into rings), command (`mdpipe history`, `mdpipe replay`).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mdpipe.history.query import (
        HistoryError,
        books,
        candles,
        intervals,
        symbols,
        tickers,
        trades,
    )

__all__ = ["HistoryError", "books", "candles", "intervals", "symbols", "tickers", "trades"]


def __getattr__(name: str) -> Any:
    """The query API, imported on first use: the archiver process never loads DuckDB."""
    if name in __all__:
        from mdpipe.history import query

        return getattr(query, name)
    raise AttributeError(f"module 'mdpipe.history' has no attribute {name!r}")
