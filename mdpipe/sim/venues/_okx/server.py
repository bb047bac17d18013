"""The OKX simulator server: `/ws/v5/public`, REST books and instruments, `/_sim/*` control.

One websockets server, like the Binance simulator's: the source (synthetic market or tape)
publishes into the hub by `channel:instId`, the connection handler answers subscribe and
unsubscribe ops, text pings and the documented errors, and enforces OKX's limits (idle
close after 30 s without a client message or a push, 480 subscribe ops per connection-hour,
64 KB per subscribe message, 3 new connections per second).
"""

from __future__ import annotations

import asyncio
import http
import itertools
import logging
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mdpipe.sim import clock
from mdpipe.sim.connection import SimConnection, request_body, request_method
from mdpipe.sim.fault_effects import (
    GOING_AWAY,
    BackgroundTasks,
    MalformedCycle,
    disconnect,
    fire_due,
    gap_feed,
    inject_fault,
    silence_feed,
)
from mdpipe.sim.faults import (
    Fault,
    FaultError,
    FaultSchedule,
    RestFaultWindows,
    ScheduledFault,
)
from mdpipe.sim.hub import Client, Hub
from mdpipe.sim.serving import serve_until_stopped
from mdpipe.sim.venues._okx.market import OkxMarket, stream
from mdpipe.sim.venues._okx.tape import OkxTapeSource, load_okx_tape
from mdpipe.sim.venues._okx.tickers import CHANNELS as TICKER_CHANNELS
from mdpipe.sim.venues._okx.tickers import malformed_push as ticker_malformed
from mdpipe.sim.venues._okx.wire import (
    BUSINESS_PATH,
    INSTRUMENTS_PATH,
    PUBLIC_PATH,
    ack,
    check_arg,
    error_event,
    notice,
    okx_instrument,
    parse_request,
    rest_error,
    rest_instruments,
)
from mdpipe.venues.okx.protocol import (
    BOOKS_PATH,
    IDLE_CLOSE_S,
    NEW_CONNECTIONS_PER_SECOND,
    SUBSCRIBE_OPS_PER_HOUR,
)

log = logging.getLogger("mdpipe.sim")

IDLE_CLOSE_CODE = 4004
START_SETTLE_S = 0.2  # with --start on-connect: quiet time after the last subscribe op
_CLOSE_GRACE = 1.0
JSON_TYPE = "application/json"


@dataclass
class OkxSimConfig:
    """What `mdpipe sim --venue okx` can be told."""

    host: str = "127.0.0.1"
    port: int = 8443
    market: str = "swap"
    symbols: list[str] = field(default_factory=lambda: ["BTC-USDT-SWAP", "ETH-USDT-SWAP"])
    rate: float = 2000.0
    seed: int = 1
    levels: int = 400
    tape: Path | None = None
    speed: float = 1.0
    max_speed: bool = False
    loop_tape: bool = False
    start_immediately: bool = False
    start_clients: int = 1
    faults: list[ScheduledFault] = field(default_factory=list)
    books_ms: int = 100  # books push interval; 0 = one update per engine step
    legacy: bool = False  # checksums on, some updates without seqId (data before 2026)
    in_band_snapshot: bool = True  # False: books subscribe sends no snapshot (REST start)
    keepalive_s: float = 60.0
    idle_close_s: float = IDLE_CLOSE_S
    max_ops_per_hour: int = SUBSCRIBE_OPS_PER_HOUR
    connect_rate: int = NEW_CONNECTIONS_PER_SECOND
    max_send_buffer: int = 64 * 1024 * 1024
    tick: float = 0.001
    oversized_bytes: int = 2 * 1024 * 1024


@dataclass
class _Conn:
    """OKX state of one client connection."""

    client: Client
    conn_id: str
    path: str
    ops: deque[float] = field(default_factory=deque)
    last_in: float = 0.0


def _response(status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> Response:
    hs = Headers(
        [
            ("Content-Type", JSON_TYPE),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *(headers or []),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, hs, body)


class OkxSimulator:
    """The simulated OKX public API."""

    def __init__(self, cfg: OkxSimConfig) -> None:
        self.cfg = cfg
        self.hub = Hub(cfg.max_send_buffer)
        self.schedule = FaultSchedule(cfg.faults)
        self.rest_faults = RestFaultWindows()
        self.source: OkxMarket | OkxTapeSource
        if cfg.tape is not None:
            tape = load_okx_tape(cfg.tape)
            self.source = OkxTapeSource(
                tape,
                self.hub,
                cfg.speed,
                cfg.max_speed,
                cfg.loop_tape,
                cfg.tick,
                self.schedule,
                self._fire_due,
            )
            self.instruments = [okx_instrument(i, cfg.seed) for i in sorted(self.source.symbols)]
        else:
            self.instruments = [okx_instrument(s, cfg.seed) for s in cfg.symbols]
            self.source = OkxMarket(
                self.instruments,
                self.hub,
                cfg.seed,
                cfg.levels,
                cfg.rate,
                cfg.books_ms,
                cfg.legacy,
                cfg.keepalive_s,
                cfg.tick,
                self.schedule,
                self._fire_due,
            )
        self.market = cfg.market
        self.conns: dict[Client, _Conn] = {}
        self._ids = itertools.count(1)
        self._subscribers: set[int] = set()
        self._start_timer: asyncio.TimerHandle | None = None
        self._background = BackgroundTasks()
        self._handshakes: deque[float] = deque()
        self._rng = random.Random(f"{cfg.seed}:okx:faults")
        self._malformed_cycle = MalformedCycle()
        self.last_push: dict[str, float] = {}
        self._last_counts: dict[str, int] = {}
        self.counts: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self.rest_status: Counter[str] = Counter()
        self.opened = 0

    # ----- lifecycle ----------------------------------------------------------------------

    async def serve(self, ready: Callable[[str, int], None]) -> None:
        """Listen, call `ready(host, port)`, run until SIGINT/SIGTERM."""
        await serve_until_stopped(
            host=self.cfg.host,
            port=self.cfg.port,
            handler=self._handle_ws,
            process_request=self._process_request,
            ready=ready,
            start_now=self.source.started.set if self.cfg.start_immediately else None,
            market=self.source.run,
            hub=self.hub,
            close_timeout=_CLOSE_GRACE,
            helpers=(self._idle_check,),
            ping_interval=None,  # OKX clients ping (text "ping"); the server does not
            open_timeout=None,
        )

    # ----- HTTP ---------------------------------------------------------------------------

    async def _process_request(self, conn: SimConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        method = request_method(request)
        if path.startswith("/_sim/"):
            status, body = self._control(method, path, request_body(request))
            return _response(status, body)
        if path in (BOOKS_PATH, INSTRUMENTS_PATH):
            status, body, headers = await self._rest(method, path, query)
            self.rest_status[str(status)] += 1
            return _response(status, body, headers)
        if path not in (PUBLIC_PATH, BUSINESS_PATH):
            return _response(404, rest_error("404", f"no such endpoint {path}"))
        now = asyncio.get_running_loop().time()
        handshakes = self._handshakes
        while handshakes and handshakes[0] <= now - 1.0:
            handshakes.popleft()
        if len(handshakes) >= self.cfg.connect_rate:
            self.counts["handshakes_refused"] += 1
            return _response(429, rest_error("50011", "Too Many Requests"))
        handshakes.append(now)
        conn.sim_route = path  # type: ignore[assignment]
        return None

    async def _rest(self, method: str, path: str, query: str) -> tuple[int, bytes, list]:
        if method != "GET":
            return 405, rest_error("405", f"Method {method} not allowed"), []
        params = parse_qs(query, keep_blank_values=True)
        now_ms = clock.now_ms()
        if path == INSTRUMENTS_PATH:
            kind = params.get("instType", [""])[0]
            if kind not in ("SWAP", "SPOT"):
                return 200, rest_error("51000", "Parameter instType error"), []
            chosen = [i for i in self.instruments if i.swap == (kind == "SWAP")]
            return 200, rest_instruments(chosen), []
        inst_id = params.get("instId", [""])[0]
        if not inst_id:
            return 200, rest_error("50014", "Parameter instId can not be empty"), []
        if inst_id not in self.source.symbols:
            return 200, rest_error("51001", "Instrument ID does not exist"), []
        raw_sz = params.get("sz", ["1"])[0]
        if not raw_sz.isdigit() or not 1 <= int(raw_sz) <= 400:
            return 200, rest_error("51000", "Parameter sz error"), []
        fault = self.rest_faults.take(asyncio.get_running_loop().time())
        if fault is not None:
            if fault.kind == "rest_slow":
                await asyncio.sleep(5.0 if fault.delay is None else fault.delay)
            else:
                return self._rest_fault(fault)
        body = self.source.rest(inst_id, int(raw_sz), now_ms)
        if body is None:
            return 503, rest_error("50001", "Service temporarily unavailable"), []
        return 200, body, []

    def _rest_fault(self, fault: Fault) -> tuple[int, bytes, list]:
        retry = [("Retry-After", str(fault.retry_after))] if fault.retry_after else []
        if fault.kind == "rest_429":
            return 429, rest_error("50011", "Too Many Requests"), retry
        if fault.kind == "rest_418":
            return 418, rest_error("50011", "Too Many Requests"), retry
        if fault.kind == "rest_451":
            return 451, rest_error("51155", "Service is not available in your region"), []
        return 500, rest_error("50001", "Service temporarily unavailable"), []

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if path == "/_sim/stats" and method == "GET":
            return 200, orjson.dumps(self.stats_dict())
        if path == "/_sim/fault" and method == "POST":
            try:
                fault = Fault.from_mapping(orjson.loads(body))
                return 200, orjson.dumps(self.inject(fault))
            except (FaultError, orjson.JSONDecodeError, ValueError) as exc:
                return 400, orjson.dumps({"ok": False, "error": str(exc)})
        if path in ("/_sim/stats", "/_sim/fault"):
            return 405, orjson.dumps({"ok": False, "error": f"{method} not allowed on {path}"})
        return 404, orjson.dumps({"ok": False, "error": f"no control endpoint {path}"})

    # ----- WebSocket ----------------------------------------------------------------------

    async def _handle_ws(self, conn: SimConnection) -> None:
        path = conn.sim_route
        if path is None:
            return
        loop = asyncio.get_running_loop()
        client = Client(conn, False, str(path), next(self._ids))
        state = _Conn(client, f"{self._rng.getrandbits(32):08x}", str(path), last_in=loop.time())
        self.hub.add(client)
        self.conns[client] = state
        self.opened += 1
        try:
            async for message in conn:
                state.last_in = loop.time()
                if message == "ping":
                    self.counts["pings"] += 1
                    if not self.source.silent():  # a stalled feed answers nothing
                        self.hub.send(client, b"pong")
                else:
                    self._on_request(state, message)
                self.hub.flush()
        except ConnectionClosed:
            pass
        finally:
            self.hub.remove(client)
            self.conns.pop(client, None)
            self.closed[client.close_reason or "client"] += 1

    def _on_request(self, state: _Conn, message: str | bytes) -> None:
        client = state.client
        req = parse_request(message)
        if req.error is not None:
            self.counts["errors_sent"] += 1
            self.hub.send(client, error_event(req.request_id, *req.error, state.conn_id))
            return
        now = asyncio.get_running_loop().time()
        ops = state.ops
        while ops and ops[0] <= now - 3600.0:
            ops.popleft()
        if len(ops) >= self.cfg.max_ops_per_hour:
            self.counts["ops_refused"] += 1
            msg = f"Invalid request: more than {self.cfg.max_ops_per_hour} {req.op} ops this hour"
            self.hub.send(client, error_event(req.request_id, "60012", msg, state.conn_id))
            return
        ops.append(now)
        self.counts[req.op] += 1
        for arg in req.args:
            problem = check_arg(arg, state.path, self.source.symbols)
            if problem is not None:
                self.counts["errors_sent"] += 1
                self.hub.send(client, error_event(req.request_id, *problem, state.conn_id))
                return
        for arg in req.args:
            name = stream(arg["channel"], arg["instId"])
            reply_arg = {"channel": arg["channel"], "instId": arg["instId"]}
            self.hub.send(client, ack(req.request_id, req.op, reply_arg, state.conn_id))
            if req.op == "unsubscribe":
                if name in client.subs:
                    client.subs.remove(name)
                self.hub.detach(client, name)
                continue
            if name in client.subs:
                continue
            if arg["channel"] == "books" and self.cfg.in_band_snapshot:
                snap = self.source.snapshot(arg["instId"], clock.now_ms())
                if snap is not None:
                    self.hub.send(client, snap)
            on_subscribe = getattr(self.source, "on_subscribe", None)
            if on_subscribe is not None and req.op == "subscribe":
                first = on_subscribe(arg["channel"], arg["instId"], clock.now_ms())
                if first is not None and self.source.started.is_set():
                    self.hub.send(client, first)
            client.subs.append(name)
            self.hub.attach(client, name)
        self._subscribers.add(client.id)
        if len(self._subscribers) >= self.cfg.start_clients and not self.source.started.is_set():
            # A client subscribes with one message per instrument: start once its burst of
            # requests is over, so the first line of a tape reaches every book it asked for.
            if self._start_timer is not None:
                self._start_timer.cancel()
            self._start_timer = asyncio.get_running_loop().call_later(
                START_SETTLE_S, self.source.started.set
            )

    async def _idle_check(self) -> None:
        """Close connections with neither a client message nor a push for idle_close_s."""
        loop = asyncio.get_running_loop()
        limit = self.cfg.idle_close_s
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            now = loop.time()
            sent = self.hub.sent_by_stream
            for name, count in sent.items():
                if self._last_counts.get(name) != count:
                    self._last_counts[name] = count
                    self.last_push[name] = now
            for client, state in list(self.conns.items()):
                pushed = max((self.last_push.get(s, 0.0) for s in client.subs), default=0.0)
                if now - max(state.last_in, pushed) > limit and client.is_open():
                    client.close_reason = "idle"
                    self._background.spawn(
                        client.conn.close(IDLE_CLOSE_CODE, "No data received in 30s.")
                    )

    # ----- faults -------------------------------------------------------------------------

    def _fire_due(self, market_time: float) -> None:
        fire_due(self.schedule, market_time, self.inject)

    def inject(self, fault: Fault) -> dict[str, Any]:
        """Apply a fault now; returns what it did."""
        return inject_fault(
            fault,
            venue="okx",
            symbols=self.source.symbols,
            handlers=self,
            prefix="_fault_",
            rest_faults=self.rest_faults,
            counts=self.faults,
        )

    def _fault_disconnect(self, fault: Fault) -> dict[str, Any]:
        clients = self.hub.open_clients()
        disconnect(clients, fault.variant, self._background.spawn)
        return {"connections": len(clients), "variant": fault.variant or "abrupt"}

    def _fault_gap(self, fault: Fault) -> dict[str, Any]:
        return gap_feed(self.source, fault, self._rng)

    def _fault_silence(self, fault: Fault) -> dict[str, Any]:
        """Nothing for `seconds`: for one instrument its pushes stop (a quiet market to the
        client); for the whole feed pushes and pongs stop (a stalled connection)."""
        return silence_feed(self.source, fault)

    def _fault_shutdown(self, fault: Fault) -> dict[str, Any]:
        """OKX's 64008 notice, then the cut `seconds` later (60 s on the exchange)."""
        clients = self.hub.open_clients()
        delay = 60.0 if fault.seconds is None else fault.seconds
        loop = asyncio.get_running_loop()
        for client in clients:
            state = self.conns.get(client)
            conn_id = state.conn_id if state else ""
            msg = "The connection will soon be closed for a service upgrade. Please reconnect."
            self.hub.send(client, notice("64008", msg, conn_id))
            loop.call_later(delay, self._cut, client)
        self.hub.flush()
        return {"connections": len(clients), "close_after_s": delay}

    def _cut(self, client: Client) -> None:
        if client.is_open():
            client.close_reason = "fault_shutdown"
            self._background.spawn(client.conn.close(GOING_AWAY, "service upgrade"))

    def _fault_malformed(self, fault: Fault) -> dict[str, Any]:
        variants = self._malformed_cycle.variants(fault)
        reached = sent = 0
        oversized = self.cfg.oversized_bytes
        for client in self.hub.open_clients():
            books = [s for s in client.subs if s.startswith("books:")]
            tickers = [s for s in client.subs if s.partition(":")[0] in TICKER_CHANNELS]
            if fault.symbol:
                books = [s for s in books if s == stream("books", fault.symbol)]
                tickers = [s for s in tickers if s.partition(":")[2] == fault.symbol]
            if not books and not tickers:
                continue
            if books:
                inst_id = books[0].partition(":")[2]
                seq = self.source.last_seq(inst_id)
                for variant in variants:
                    self.hub.send(client, malformed_push(variant, inst_id, seq, oversized))
                sent += len(variants)
            if tickers:
                channel, _, inst_id = tickers[0].partition(":")
                for variant in variants:
                    frame = ticker_malformed(variant, channel, inst_id, clock.now_ms(), oversized)
                    self.hub.send(client, frame)
                sent += len(variants)
            reached += 1
        self.hub.flush()
        self.counts["malformed_sent"] += sent
        return {"connections": reached, "variants": variants, "frames": sent}

    # ----- stats --------------------------------------------------------------------------

    def stats_dict(self) -> dict[str, Any]:
        """Everything /_sim/stats reports."""
        return {
            "venue": "okx",
            "mode": "tape" if self.cfg.tape is not None else "synthetic",
            "connections": {
                "current": len(self.hub.clients),
                "opened": self.opened,
                "closed": dict(self.closed),
            },
            "requests": dict(self.counts),
            "rest_by_status": dict(self.rest_status),
            "faults": dict(self.faults),
            "messages": {**self.hub.stats(), "slow_clients_dropped": self.hub.slow_dropped},
            "source": self.source.stats(),
        }


def malformed_push(variant: str, inst_id: str, seq: int, oversized: int) -> bytes:
    """A bad `books` update of one variant; it claims prevSeqId = the last pushed seqId, so a
    client that refuses it keeps its chain, one that applies it breaks."""
    level = ["1", "1", "0", "1"]
    data: dict[str, Any] = {
        "asks": [level],
        "bids": [],
        "ts": str(clock.now_ms()),
        "checksum": 0,
        "prevSeqId": seq,
        "seqId": seq + 1,
    }
    channel = "books"
    if variant == "nan_price":
        data["asks"] = [["NaN", "1", "0", "1"]]
    elif variant == "negative_price":
        data["asks"] = [["-1", "1", "0", "1"]]
    elif variant == "missing_field":
        del data["ts"]
    elif variant == "wrong_type":
        data["asks"] = [[1.5, "1", "0", "1"]]
    elif variant == "unknown_stream":
        channel = "books-unknown"
    elif variant == "oversized":
        data = {"pad": "x" * max(oversized - 200, 0), "ts": data["ts"]}  # and no levels
    body = orjson.dumps(
        {"arg": {"channel": channel, "instId": inst_id}, "action": "update", "data": [data]}
    )
    if variant == "truncated":
        return body[: len(body) // 2]
    return body
