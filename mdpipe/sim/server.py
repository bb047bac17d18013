"""One websockets server for streams, REST depth and the /_sim control endpoint; applies faults."""

from __future__ import annotations

import asyncio
import http
import itertools
import time
from collections.abc import Callable
from typing import Any

import orjson
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mdpipe.sim import clock
from mdpipe.sim.config import (
    INCOMING_RATE,
    PING_INTERVAL,
    PING_TIMEOUT,
    START_IMMEDIATELY,
    SimConfig,
)
from mdpipe.sim.connection import SimConnection, request_body, request_method
from mdpipe.sim.control import handle_control
from mdpipe.sim.fault_effects import GOING_AWAY, BackgroundTasks, fire_due
from mdpipe.sim.faults import (
    Fault,
    FaultError,
    FaultSchedule,
    RestFaultWindows,
)
from mdpipe.sim.hub import Client, Hub
from mdpipe.sim.injector import FaultInjector
from mdpipe.sim.instruments import FUTURES, exchange_info, symbol_spec
from mdpipe.sim.limits import MAX_MESSAGE_BYTES, MAX_URL_LENGTH, WEIGHT_LIMIT, WeightLimiter
from mdpipe.sim.market import MarketModel
from mdpipe.sim.rest import (
    DEPTH_PATH,
    INFO_PATH,
    JSON_TYPE,
    PING_PATH,
    TIME_PATH,
    Reply,
    depth_params,
    depth_weight,
    error,
    fault_reply,
    unavailable,
)
from mdpipe.sim.serving import serve_until_stopped
from mdpipe.sim.source import SnapshotUnavailable, Source
from mdpipe.sim.stats import ServerStats
from mdpipe.sim.streams import MAX_STREAMS, parse_ws_path, route_delivers
from mdpipe.sim.synthetic import SyntheticSource
from mdpipe.sim.tape import TapeSource, load_tape

_CLOSE_GRACE = 1.0  # seconds a client gets to answer a close frame


def _response(reply: Reply) -> Response:
    headers = Headers(
        [
            ("Content-Type", JSON_TYPE),
            ("Content-Length", str(len(reply.body))),
            ("Connection", "close"),
            *reply.headers,
        ]
    )
    return Response(reply.status, http.HTTPStatus(reply.status).phrase, headers, reply.body)


def _json_reply(status: int, body: Any) -> Reply:
    return Reply(status, orjson.dumps(body))


class Simulator:
    """The simulated exchange: a source of market data, its clients, its faults, its counters."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.hub = Hub(cfg.max_send_buffer)
        self.stats = ServerStats()
        self.rest_faults = RestFaultWindows()
        self.schedule = FaultSchedule(cfg.faults)
        self._background = BackgroundTasks()
        self._client_ids = itertools.count(1)
        self._subscribers: set[int] = set()
        self._started_wall = time.time()
        self.source: Source
        if cfg.tape is not None:
            tape = load_tape(cfg.tape, cfg.market)
            self.source = TapeSource(
                tape,
                self.hub,
                cfg.speed,
                cfg.max_speed,
                cfg.loop_tape,
                cfg.rest_wait,
                cfg.tick,
                self.schedule,
                self._fire_due,
            )
        else:
            market = cfg.market or FUTURES
            specs = [symbol_spec(s, market, cfg.seed) for s in cfg.symbols]
            model = MarketModel(specs, market, cfg.seed, cfg.levels)
            self.source = SyntheticSource(
                model, self.hub, cfg.rate, cfg.tick, self.schedule, self._fire_due
            )
        self.market = self.source.market
        self.weight = WeightLimiter(cfg.weight_limit or WEIGHT_LIMIT[self.market], cfg.ban_seconds)
        self.injector = FaultInjector(
            self.hub,
            self.source,
            self.rest_faults,
            cfg.seed,
            cfg.oversized_bytes,
            self._background.spawn,
        )
        self.ping_interval = cfg.ping_interval or PING_INTERVAL[self.market]
        self.ping_timeout = cfg.ping_timeout or PING_TIMEOUT[self.market]
        self.incoming_rate = (
            INCOMING_RATE[self.market] if cfg.max_incoming_rate is None else cfg.max_incoming_rate
        )

    async def serve(self, ready: Callable[[str, int], None]) -> None:
        """Listen, call `ready(host, port)`, and run until SIGINT/SIGTERM."""
        await serve_until_stopped(
            host=self.cfg.host,
            port=self.cfg.port,
            handler=self._handle_ws,
            process_request=self._process_request,
            ready=ready,
            start_now=self.source.started.set if self.cfg.start == START_IMMEDIATELY else None,
            market=self.source.run,
            hub=self.hub,
            close_timeout=_CLOSE_GRACE,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            # REST answers may legitimately wait (rest_slow, a tape snapshot not reached yet).
            open_timeout=None,
        )

    # HTTP side --------------------------------------------------------------------------

    async def _process_request(self, conn: SimConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        method = request_method(request)
        if path.startswith("/_sim/"):
            return _response(self._control_http(method, path, request_body(request)))
        if path in (
            DEPTH_PATH[self.market],
            PING_PATH[self.market],
            TIME_PATH[self.market],
            INFO_PATH[self.market],
        ):
            if method != "GET":
                reply = error(405, -1, f"Method {method} not allowed.")
            else:
                reply = await self._rest(path, query)
            self.stats.rest_by_status[str(reply.status)] += 1
            self.stats.rest_by_path[path] += 1
            return _response(reply)
        if len(request.path) > MAX_URL_LENGTH:
            self.stats.closed["uri_too_long"] += 1
            return _response(error(414, -1, "Request-URI Too Long"))
        route = parse_ws_path(self.market, path, query)
        if route is None:
            return _response(error(404, -1, f"No such endpoint on the {self.market} simulator."))
        if len(route.streams) > MAX_STREAMS:
            return _response(error(400, -1, f"At most {MAX_STREAMS} streams per connection."))
        conn.sim_route = route
        return None

    async def _rest(self, path: str, query: str) -> Reply:
        now_ms = clock.now_ms()
        if path == PING_PATH[self.market]:
            return Reply(200, b"{}")
        if path == TIME_PATH[self.market]:
            return _json_reply(200, {"serverTime": now_ms})
        if path == INFO_PATH[self.market]:
            refused = self.weight.admit(time.time(), 1)
            info = exchange_info(sorted(self.source.symbols), self.market)
            return refused or Reply(200, orjson.dumps(info), self.weight.headers())
        parsed = depth_params(self.market, query, self.source.symbols)
        if isinstance(parsed, Reply):
            return parsed
        symbol, limit = parsed
        refused = self.weight.admit(time.time(), depth_weight(self.market, limit))
        if refused is not None:
            return refused
        if self.cfg.no_snapshot:
            return unavailable("Depth snapshots are disabled on this simulator (--no-snapshot).")
        fault = self.rest_faults.take(asyncio.get_running_loop().time())
        if fault is not None:
            if fault.kind != "rest_slow":
                return fault_reply(fault, now_ms)
            await asyncio.sleep(5.0 if fault.delay is None else fault.delay)
        try:
            body = await self.source.snapshot(symbol, limit)
        except SnapshotUnavailable as exc:
            return unavailable(str(exc))
        return Reply(200, body, self.weight.headers())

    def _control_http(self, method: str, path: str, body: bytes) -> Reply:
        if path == "/_sim/stats" and method == "GET":
            return _json_reply(200, self.stats_dict())
        if path == "/_sim/fault" and method == "POST":
            try:
                fault = Fault.from_mapping(orjson.loads(body))
                return _json_reply(200, self.injector.inject(fault))
            except (FaultError, orjson.JSONDecodeError, ValueError) as exc:
                return _json_reply(400, {"ok": False, "error": str(exc)})
        if path in ("/_sim/stats", "/_sim/fault"):
            return _json_reply(405, {"ok": False, "error": f"{method} not allowed on {path}"})
        return _json_reply(404, {"ok": False, "error": f"no control endpoint {path}"})

    # WebSocket side ---------------------------------------------------------------------

    async def _handle_ws(self, conn: SimConnection) -> None:
        route = conn.sim_route
        if route is None:
            return
        loop = asyncio.get_running_loop()
        client = Client(conn, route.combined, route.route, next(self._client_ids))
        self.hub.add(client)
        self.stats.connections_opened += 1
        expiry = loop.call_later(self.cfg.max_connection_age, self._expire, client)
        try:
            self._subscribe(client, list(route.streams))
            window_start, count = loop.time(), 0
            async for message in conn:
                if len(message) > MAX_MESSAGE_BYTES:
                    client.close_reason = "message_too_big"
                    await conn.close(1009, f"Message too big (over {MAX_MESSAGE_BYTES} bytes)")
                    break
                now = loop.time()
                if now - window_start >= 1.0:
                    window_start, count = now, 0
                count += 1
                if self.incoming_rate and count > self.incoming_rate:
                    client.close_reason = "incoming_rate"
                    await conn.close(1008, "Too many requests")
                    break
                self.stats.control_requests += 1
                result = handle_control(message, client.subs, client.combined)
                self._unsubscribe(client, result.unsubscribe)
                self._subscribe(client, result.subscribe)
                if result.combined is not None:
                    client.combined = result.combined
                self.hub.send(client, result.reply)
                self.hub.flush()
        except ConnectionClosed:
            pass
        finally:
            expiry.cancel()
            self.hub.remove(client)
            reason = client.close_reason
            if reason is None:
                sent = conn.protocol.close_sent
                reason = "ping_timeout" if sent is not None and sent.code == 1011 else "client"
            self.stats.closed[reason] += 1

    def _subscribe(self, client: Client, streams: list[str]) -> None:
        for stream in streams:
            if stream in client.subs:
                continue
            client.subs.append(stream)
            # A stream on the wrong route is accepted and listed, and never delivered.
            if route_delivers(client.route, stream) and self.source.deliverable(stream):
                self.hub.attach(client, stream)
                self.source.on_subscribe(stream)
        if client.subs and client.id not in self._subscribers:
            self._subscribers.add(client.id)
            if len(self._subscribers) >= self.cfg.start_clients:
                self.source.started.set()

    def _unsubscribe(self, client: Client, streams: list[str]) -> None:
        for stream in streams:
            client.subs.remove(stream)
            self.hub.detach(client, stream)

    def _expire(self, client: Client) -> None:
        client.close_reason = "max_age"
        self._background.spawn(client.conn.close(GOING_AWAY, "max connection age"))

    def _fire_due(self, market_time: float) -> None:
        """Inject the command-line faults due at `market_time` (called by the source)."""
        fire_due(self.schedule, market_time, self.injector.inject)

    # Stats ------------------------------------------------------------------------------

    def stats_dict(self) -> dict[str, Any]:
        """Everything /_sim/stats reports."""
        return {
            "mode": "tape" if self.cfg.tape is not None else "synthetic",
            "market": self.market,
            "uptime_s": round(time.time() - self._started_wall, 3),
            **self.stats.to_dict(len(self.hub.clients)),
            "faults": dict(self.injector.counts),
            "malformed_sent": self.injector.malformed_sent,
            "messages": {**self.hub.stats(), "slow_clients_dropped": self.hub.slow_dropped},
            "rest_fault_windows": self.rest_faults.active(),
            "rest_weight": self.weight.stats(),
            "source": self.source.stats(),
        }
