"""Upper bounds on what a config may ask for, and the checks that refuse it before anything runs.

A typo such as `book_capacity = 2^40` must be one clear line, not an 844 TB sparse file in
/dev/shm; 1,700 symbols on one connection must be refused at start, not looped on HTTP 414.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from mdpipe.shm import layout as L

if TYPE_CHECKING:
    from mdpipe.config import Config

CONFIG_FILE_MAX_BYTES = 1 << 20  # a config is a few KB; /dev/zero is not a config
RING_CAPACITY_MAX = 1 << 24  # records per ring: 16 M books of depth 20 are ~11 GB
RING_BYTES_MAX = 16 << 30  # one segment, whatever its capacity and depth
SYMBOLS_PER_FEED_MAX = 4096
# Request line a WebSocket server accepts: websockets and common proxies stop at 8 KiB,
# beyond it the upgrade is answered 414 URI Too Long and the ingest would retry forever.
WS_URL_MAX_BYTES = 8000
SHM_DIR = "/dev/shm"
INGEST_MIN_SYMBOL_SLOTS = 256  # the ingest sizes its tables for at least this many symbols


def read_config_file(path: str | os.PathLike[str]) -> str:
    """A config file's text: a regular file below CONFIG_FILE_MAX_BYTES, never a FIFO or device.

    Opened O_NONBLOCK so that a FIFO cannot hang the open; raises ValueError with the reason
    (FileNotFoundError and PermissionError pass through).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > CONFIG_FILE_MAX_BYTES:
            raise ValueError(
                f"{st.st_size} bytes, more than the {CONFIG_FILE_MAX_BYTES} bytes allowed"
            )
        raw = os.read(fd, CONFIG_FILE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > CONFIG_FILE_MAX_BYTES:
        raise ValueError(f"more than the {CONFIG_FILE_MAX_BYTES} bytes allowed")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None


def check_capacity(key: str, capacity: int, kind: int, depth: int) -> str | None:
    """Why a ring capacity is too large for one segment, or None."""
    if capacity > RING_CAPACITY_MAX:
        return f"{key}: {capacity} is more than the {RING_CAPACITY_MAX} records allowed"
    size = segment_bytes(kind, capacity, depth, INGEST_MIN_SYMBOL_SLOTS)
    if size > RING_BYTES_MAX:
        return (
            f"{key}: {capacity} records make a {size / 2**30:.1f} GiB segment, more than "
            f"the {RING_BYTES_MAX >> 30} GiB allowed"
        )
    return None


def ingest_symbol_slots(symbols: int) -> int:
    """Symbol-table rows an ingest ring gets: room to double by runtime subscriptions."""
    return min(L.MAX_SYMBOLS, max(INGEST_MIN_SYMBOL_SLOTS, 2 * symbols))


def segment_bytes(kind: int, capacity: int, depth: int, symbols: int) -> int:
    """Size of one segment as its writer will create it."""
    max_symbols = ingest_symbol_slots(symbols)
    return L.segment_geometry(kind, capacity, depth, max_symbols)["segment_size"]


def derived_capacity(n_symbols: int, trade_capacity: int) -> int:
    """Slots of a ticker or candle ring: 64 records a symbol (at least 4096), at most the
    trades ring's; they are written at a venue's ticker pace or once an interval, not per
    trade."""
    want = max(1 << 12, 64 * n_symbols)
    return min(trade_capacity, 1 << (want - 1).bit_length())


def instance_bytes(cfg: Config) -> int:
    """The /dev/shm bytes every ring of an instance takes once written to its end."""
    total = 0
    for feed, _shard, _core, symbols in cfg.ingest_shards():
        n = len(symbols)
        total += segment_bytes(L.KIND_BOOK, cfg.shm.book_capacity, cfg.shm.depth, n)
        total += segment_bytes(L.KIND_TRADE, cfg.shm.trade_capacity, 0, n)
        derived = derived_capacity(n, cfg.shm.trade_capacity)
        if feed.tickers:
            total += segment_bytes(L.KIND_TICKER, derived, 0, n)
        total += len(feed.candles) * segment_bytes(L.KIND_CANDLE, derived, 0, n)
    return total


def check_shm_space(cfg: Config, shm_dir: str = SHM_DIR) -> str | None:
    """Why /dev/shm cannot hold the instance's rings, or None.

    Segments are sparse: they fill as the ring wraps, and a write into a page tmpfs cannot
    supply kills the writer with SIGBUS. Space held by this instance's own segments (about
    to be replaced) counts as free.
    """
    try:
        vfs = os.statvfs(shm_dir)
    except OSError:
        return None  # no /dev/shm: creating the segments says why
    free = vfs.f_bavail * vfs.f_frsize
    prefix = f"mdpipe.{cfg.instance}."
    try:
        for entry in os.scandir(shm_dir):
            if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                free += entry.stat(follow_symlinks=False).st_blocks * 512
    except OSError:
        pass
    need = instance_bytes(cfg)
    if need > free:
        return (
            f"shm.book_capacity: the rings need {need / 2**20:.0f} MiB of {shm_dir} and "
            f"{free / 2**20:.0f} MiB are free; lower shm.book_capacity / shm.trade_capacity "
            f"or free {shm_dir}"
        )
    return None


def check_connection_plan(key: str, feed: object, symbols: list[str]) -> str | None:
    """Why one ingest process's symbols cannot fit the venue's connection limits, or None.

    The venue plans its own routes within its stream and subscribe limits; what it cannot
    plan around is a URL that carries the streams (Binance's combined streams) growing past
    what a server accepts.
    """
    from mdpipe.venues import make_venue

    try:
        routes = make_venue(feed, symbols).plan()
    except ValueError as exc:
        return f"{key}: {exc}"
    base = feed.ws_url.rstrip("/")
    longest = max((len(r.url) - len(base) for r in routes), default=0)
    if longest > WS_URL_MAX_BYTES:
        per_symbol = max(1, longest // max(1, len(symbols)))
        fits = max(1, WS_URL_MAX_BYTES // per_symbol)
        return (
            f"{key}: {len(symbols)} symbols on one ingest process need a {longest}-byte "
            f"stream URL, more than the {WS_URL_MAX_BYTES} a server accepts (HTTP 414); list "
            f"at most about {fits} symbols per core in cores"
        )
    return None
