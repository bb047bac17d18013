"""Shared helpers of the ingest tests: a real ingest subprocess, ring record logs, ground truth.

Holds no tests itself; the test_ingest_* modules import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np
import orjson
import posix_ipc
import websocket
from conftest import remove_segments, unique_instance

from mdpipe import readers
from mdpipe.shm import layout as L
from mdpipe.shm.segment import LayoutError, read_status
from mdpipe.sim.process import SimProcess
from mdpipe.venues.binance.wire import BinanceParser, BookTicker, FeedError

REPO = Path(__file__).resolve().parent.parent
CORE = max(os.sched_getaffinity(0))


def write_config(
    path: Path,
    instance: str,
    *,
    ws_url: str,
    rest_url: str,
    market: str,
    symbols: list[str],
    dead_letter_dir: Path,
    book_capacity: int = 1 << 16,
    trade_capacity: int = 1 << 16,
    depth: int = 20,
    **feed: Any,
) -> Path:
    """A TOML config with one feed named `f` on one core, pointing at a simulator."""
    values = {
        "depth_stream": "depth@0ms" if market == "futures" else "depth@100ms",
        "trade_stream": "trade",
        "silence_timeout": 5.0,
        "stream_timeout": 10.0,
        "reconnect_initial": 0.05,
        "reconnect_max": 0.5,
        # The ticker streams add a connection (Binance) or topics: tests of tickers ask.
        "tickers": False,
        **feed,
    }
    lines = [
        f'instance = "{instance}"',
        "[shm]",
        f"book_capacity = {book_capacity}",
        f"trade_capacity = {trade_capacity}",
        f"depth = {depth}",
        "[[feeds]]",
        'name = "f"',
        f'market = "{market}"',
        f'ws_url = "{ws_url}"',
        f'rest_url = "{rest_url}"',
        f"symbols = [{', '.join(repr(s).replace(chr(39), chr(34)) for s in symbols)}]",
        f"cores = [{CORE}]",
    ]
    for key, value in values.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    lines += ["[supervisor]", f'dead_letter_dir = "{dead_letter_dir}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sim_config(
    tmp: Path, instance: str, sim: SimProcess, *, market: str, symbols: list[str], **feed: Any
) -> Path:
    """write_config for one feed on the simulator `sim`: tmp/ingest.toml, dead letters in tmp/dead."""
    return write_config(
        tmp / "ingest.toml",
        instance,
        ws_url=sim.ws_url,
        rest_url=sim.rest_url,
        market=market,
        symbols=symbols,
        dead_letter_dir=tmp / "dead",
        **feed,
    )


class IngestProcess:
    """`python -m mdpipe.ingest` as a real subprocess; stderr kept in a log file."""

    def __init__(self, config: Path, instance: str, feed: str = "f", shard: int = 0) -> None:
        self.config, self.instance, self.feed, self.shard = config, instance, feed, shard
        self.log_path = config.with_suffix(f".ingest{shard}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def books_ring(self) -> str:
        return f"books.{self.feed}.{self.shard}"

    @property
    def trades_ring(self) -> str:
        return f"trades.{self.feed}.{self.shard}"

    def start(self, env: dict[str, str] | None = None) -> IngestProcess:
        args = [sys.executable, "-m", "mdpipe.ingest", "--config", str(self.config)]
        args += ["--feed", self.feed, "--shard", str(self.shard)]
        full_env = {**os.environ, **(env or {})}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stderr=log, stdout=log, cwd=REPO, env=full_env)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def counters(self) -> dict[str, int]:
        return read_status(self.instance, self.books_ring).counters

    def wait_for(
        self, what: str, pred: Callable[[dict[str, int]], bool], timeout: float = 20.0
    ) -> dict[str, int]:
        """Poll the counters until pred holds; fail with the counters and log otherwise."""
        deadline = time.monotonic() + timeout
        counters: dict[str, int] = {}
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (
                f"ingest exited ({self.proc.returncode}) waiting for {what}:\n{self.log()[-4000:]}"
            )
            # KeyError: a process just started may not have named every counter yet.
            with contextlib.suppress(OSError, posix_ipc.ExistentialError, LayoutError, KeyError):
                counters = self.counters()
                if pred(counters):
                    return counters
            time.sleep(0.05)
        raise AssertionError(
            f"timed out waiting for {what}; counters {counters}\n{self.log()[-4000:]}"
        )

    def wait_running(self, timeout: float = 20.0) -> dict[str, int]:
        """Wait until this process owns its books segment (not a previous writer's)."""

        def mine(_: dict[str, int]) -> bool:
            return read_status(self.instance, self.books_ring).writer_pid == self.proc.pid

        return self.wait_for("the process to own its rings", mine, timeout)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"ingest ignored SIGTERM:\n{self.log()[-4000:]}") from None
        return self.proc.returncode

    def __enter__(self) -> IngestProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Collector(Protocol):
    """A ground-truth client on its own connection (started when made)."""

    def stop(self) -> None: ...


@dataclass
class VenueRig:
    """A simulator, one ingest process on it, its rings, and a ground-truth collector."""

    sim: SimProcess
    ingest: IngestProcess
    books: RecordLog
    trades: RecordLog
    truth: Any  # the venue's Collector: its ground truth, read by the tests
    live: int  # books that are synced when all is well
    dead_letter: Path
    connections: int = 1  # the feed's connections, all up when all is well

    def counters(self) -> dict[str, int]:
        return self.ingest.counters()

    def wait_synced(
        self,
        what: str,
        more: dict[str, int] | None = None,
        base: dict[str, int] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, int]:
        """Every book synced, the connection up, and the counters grown by `more` since `base`."""
        base, more = base or {}, more or {}

        def done(c: dict[str, int]) -> bool:
            self.books.drain()
            self.trades.drain()
            return (
                c["g_books_synced"] == self.live
                and c["g_connections"] == self.connections
                and all(c.get(k, 0) >= base.get(k, 0) + n for k, n in more.items())
            )

        return self.ingest.wait_for(what, done, timeout)

    def records_since(self, mark: int, sid: int) -> np.ndarray:
        """Book records of symbol `sid` committed after the first `mark` drained."""
        recs = self.books.drain()[mark:]
        return recs[recs["symbol_id"] == sid]


def venue_rig(
    tmp: Path,
    sim_args: list[str],
    truth: Callable[[str], Collector],
    market: str,
    symbols: list[str],
    *,
    live: int | None = None,
    connections: int = 1,
    **feed: Any,
) -> Iterator[VenueRig]:
    """Run a simulator (`sim_args`), `truth(ws_url)` and one ingest process of one feed on it,
    synced (`live` books, every symbol's by default, on `connections`); yield the rig; stop
    all and remove the segments (a module-scoped fixture's body)."""
    instance = unique_instance()
    sim = SimProcess(sim_args).start()
    collector: Collector | None = None
    ingest: IngestProcess | None = None
    try:
        collector = truth(sim.ws_url)
        dead = tmp / "dead"
        cfg = write_config(
            tmp / "ingest.toml",
            instance,
            ws_url=sim.ws_url,
            rest_url=sim.rest_url,
            market=market,
            symbols=symbols,
            dead_letter_dir=dead,
            book_capacity=1 << 17,
            **feed,
        )
        ingest = IngestProcess(cfg, instance).start()
        books = RecordLog(instance, ingest.books_ring, "book")
        trades = RecordLog(instance, ingest.trades_ring, "trade")
        live = len(symbols) if live is None else live
        rig = VenueRig(sim, ingest, books, trades, collector, live,
                       dead / f"{instance}.f.0.jsonl", connections)  # fmt: skip
        rig.wait_synced("the first sync")
        yield rig
        assert ingest.stop() == 0, ingest.log()[-4000:]
        books.close()
        trades.close()
    finally:
        if ingest is not None:
            ingest.__exit__()
        if collector is not None:
            collector.stop()
        sim.stop()
        remove_segments(instance)


class RecordLog:
    """Every record of a ring since it was created, drained on demand (oldest first)."""

    def __init__(self, instance: str, ring: str, kind: str) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                self.reader = readers.attach(instance, ring, kind=kind, wait=True, timeout=20)
                break
            except LayoutError:
                # attach(wait=True) can map a segment whose writer has not yet written its
                # header (magic last); look again.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.reader.seek_oldest()
        self.parts: list[np.ndarray] = []

    def drain(self) -> np.ndarray:
        while True:
            batch = self.reader.read_batch(4096)
            if not len(batch):
                break
            self.parts.append(batch)
        assert self.reader.lost == 0, "the test fell a whole ring behind: raise the capacity"
        return self.all()

    def all(self) -> np.ndarray:
        if not self.parts:
            return np.empty(0, self.reader.dtype)
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0]

    def close(self) -> None:
        self.reader.close()


Ticker = tuple[float, float, float, float]


def tape_book_tickers(path: Path) -> dict[tuple[str, int], Ticker]:
    """(symbol, u) -> (bid, bid qty, ask, ask qty) of every bookTicker on a tape."""
    out: dict[tuple[str, int], Ticker] = {}
    with gzip.open(path, "rb") as f:
        for line in f:
            if b"@bookTicker" not in line[:80]:
                continue
            d = orjson.loads(line.partition(b" ")[2])["data"]
            out[(d["s"], d["u"])] = (float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"]))
    return out


def compare_with_tickers(
    records: np.ndarray,
    symbols: list[str],
    tickers: dict[tuple[str, int], Ticker],
    *,
    id_name: str = "u",
    truth: str = "ticker",
) -> tuple[int, list[str]]:
    """(comparable SYNCED records, descriptions of those whose top differs from the ticker the
    venue sent with the same update id; `id_name` and `truth` name them in the descriptions)."""
    comparable = 0
    wrong = []
    for rec in records:
        if not rec["flags"] & L.FLAG_SYNCED:
            continue
        sym = symbols[int(rec["symbol_id"])]
        t = tickers.get((sym, int(rec["last_update_id"])))
        if t is None:
            continue
        comparable += 1
        top = (
            float(rec["bids"][0, 0]),
            float(rec["bids"][0, 1]),
            float(rec["asks"][0, 0]),
            float(rec["asks"][0, 1]),
        )
        if top != t:
            update_id = int(rec["last_update_id"])
            wrong.append(f"{sym} {id_name}={update_id}: book {top} != {truth} {t}")
    return comparable, wrong


def check_record_invariants(records: np.ndarray, depth: int) -> None:
    """Flags and levels agree: unsynced records are empty; synced ones are sorted and uncrossed."""
    for rec in records:
        flags = int(rec["flags"])
        nb, na = int(rec["bid_count"]), int(rec["ask_count"])
        if not flags & L.FLAG_SYNCED:
            assert flags == 0 and nb == 0 and na == 0, f"unsynced record with content: {rec}"
            assert not rec["bids"].any() and not rec["asks"].any()
            continue
        bids, asks = rec["bids"][:nb], rec["asks"][:na]
        assert bool(flags & L.FLAG_PARTIAL) == (nb < depth or na < depth)
        assert (np.diff(bids[:, 0]) < 0).all() and (np.diff(asks[:, 0]) > 0).all()
        assert (bids[:, 1] > 0).all() and (asks[:, 1] > 0).all()
        assert not rec["bids"][nb:].any() and not rec["asks"][na:].any()
        if nb and na:
            assert bool(flags & L.FLAG_CROSSED) == (bids[0, 0] >= asks[0, 0])


class ReconnectingCollector:
    """Ground truth the simulator sends on a connection of its own, read on a thread; reconnects
    when a fault drops it (what is sent meanwhile is just not compared).

    A subclass says what to send on connecting (`subscribe`), which parser reads a connection
    (`parser`) and what to keep of each event (`take`).
    """

    what = "ground truth"  # names the collector in the connect assertion
    ping_every: float | None = None  # seconds between text "ping"s the venue needs (OKX)

    def __init__(self, url: str) -> None:
        self.url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.connected = threading.Event()

    def start(self) -> Self:
        self._thread.start()
        assert self.connected.wait(10), f"{self.what} collector could not connect"
        return self

    def subscribe(self) -> str | bytes | None:
        """The message to send on connecting (None: the URL subscribes)."""
        return None

    def parser(self) -> Any:
        """The parser for a new connection."""
        raise NotImplementedError

    def take(self, event: Any) -> None:
        """Keep what matters of one parsed event."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ws = websocket.create_connection(self.url, timeout=1)
                first = self.subscribe()
                if first is not None:
                    ws.send(first)
            except (OSError, websocket.WebSocketException):
                time.sleep(0.05)
                continue
            parser = self.parser()
            self.connected.set()
            last_ping = time.monotonic()
            try:
                while not self._stop.is_set():
                    if (
                        self.ping_every is not None
                        and time.monotonic() - last_ping > self.ping_every
                    ):
                        ws.send("ping")
                        last_ping = time.monotonic()
                    try:
                        raw = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    try:
                        event = parser.parse(raw)
                    except FeedError:
                        continue  # the malformed fault reaches this connection too
                    self.take(event)
            except (websocket.WebSocketException, OSError):
                pass
            finally:
                ws.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class TickerCollector(ReconnectingCollector):
    """The simulator's own best bid/ask per update id, from its bookTicker stream (ground truth)."""

    what = "bookTicker"

    def __init__(self, ws_url: str, symbols: list[str], market: str = "futures") -> None:
        streams = "/".join(f"{s.lower()}@bookTicker" for s in symbols)
        route = "/public/stream" if market == "futures" else "/stream"
        super().__init__(f"{ws_url}{route}?streams={streams}")
        self.tickers: dict[tuple[str, int], Ticker] = {}
        self._parser = BinanceParser(market)

    def parser(self) -> BinanceParser:
        return self._parser

    def take(self, event: Any) -> None:
        if isinstance(event, BookTicker):
            top = (event.bid_price, event.bid_qty, event.ask_price, event.ask_qty)
            self.tickers[(event.symbol, event.update_id)] = top


def check_continuity(records: np.ndarray, futures: bool) -> int:
    """Every synced record continues the previous one's update ids, or is flagged RESYNC.

    Returns how many rebuilds (RESYNC records) there were.
    """
    last: dict[int, int] = {}
    rebuilds = 0
    for rec in records:
        sid, flags = int(rec["symbol_id"]), int(rec["flags"])
        first, u, pu = (
            int(rec["first_update_id"]),
            int(rec["last_update_id"]),
            int(rec["prev_update_id"]),
        )
        if not flags & L.FLAG_SYNCED:
            last.pop(sid, None)
            continue
        if flags & L.FLAG_RESYNC:
            rebuilds += 1
            last[sid] = u
            continue
        assert sid in last, f"synced record u={u} of symbol {sid} follows no synced record"
        if futures:
            assert pu == last[sid], f"symbol {sid}: pu={pu} after u={last[sid]}: a gap published"
        else:
            assert first <= last[sid] + 1 < u + 1, f"symbol {sid}: U={first} after u={last[sid]}"
        last[sid] = u
    return rebuilds


class TlsProxy:
    """A TLS front for a plain TCP server (the simulator), like the exchange's wss/https.

    Bytes are forwarded in large reads, so one TLS record carries many WebSocket frames:
    a client that waits on the socket alone leaves decrypted frames unread.
    """

    def __init__(self, upstream_port: int, certfile: Path, keyfile: Path) -> None:
        self.upstream_port = upstream_port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TlsProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError, RuntimeError):
                dst.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
