"""Bybit v5 public streams (linear, spot): the simulator's Bybit server.

`ws://HOST:PORT/v5/public/<market>` takes `{"op":"subscribe","req_id":..,"args":[topics]}`
(spot: at most 10 args, else `"args size >10"`), unsubscribe, and `{"op":"ping"}`, answered
as the v5 docs show. Topics: `orderbook.{1,50,200,1000}.<SYM>` (a snapshot at subscribe,
then deltas every 10/20/100/200 ms; `orderbook.1` snapshots only, repeated after 3 s
unchanged), `publicTrade.<SYM>`, `tickers.<SYM>` (linear: a snapshot at subscribe, then
every 100 ms a delta of the changed fields; spot: snapshots every 50 ms) and
`kline.<interval>.<SYM>` (candles from the trades, `_bybit_klines.py`). `u` is +1 per
push of a topic; `seq` is the symbol's cross sequence, the same in every topic pushed from the same market state, so
`orderbook.1` and deeper books pushed at one instant carry equal `seq`. No REST is served:
Bybit books start from the stream.

A synthetic market (the Binance simulator's model, `--rate` book events/s) or a tape of
`<receive ns> <raw frame>` lines (`--tape`) feeds the topics. Faults (POST /_sim/fault or
`--fault`): disconnect, gap, malformed, silence, shutdown (Bybit sends no notice: close
1001 after `seconds`), restart (the next push of each book topic is a snapshot with u=1),
snapshot (a snapshot pushed mid-stream).
"""

from __future__ import annotations

import asyncio
import http
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mdpipe.sim import clock
from mdpipe.sim.config import START_IMMEDIATELY, SimConfig
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
from mdpipe.sim.faults import Fault, FaultError, FaultSchedule
from mdpipe.sim.hub import Client, Hub
from mdpipe.sim.instruments import FUTURES, SymbolSpec, symbol_spec
from mdpipe.sim.malformed import break_price_text
from mdpipe.sim.market import BookEvent, MarketModel, SymbolMarket
from mdpipe.sim.replay import replay_paced
from mdpipe.sim.serving import serve_until_stopped
from mdpipe.sim.stats import ServerStats
from mdpipe.sim.tape_file import TapeError, read_tape_lines
from mdpipe.sim.text_levels import best_first
from mdpipe.sim.venues import _bybit_klines as klines
from mdpipe.sim.venues._bybit_tickers import LINEAR_PUSH_MS, SPOT_PUSH_MS, TickerBook
from mdpipe.sim.venues._bybit_tickers import malformed as ticker_malformed
from mdpipe.sim.venues._bybit_tickers import message as ticker_message

MARKETS = ("linear", "spot")
DEPTHS = (1, 50, 200, 1000)
INTERVAL_TICKS = {1: 1, 50: 2, 200: 10, 1000: 20}  # in 10 ms ticks
TICK_S = 0.010
TICKER_PUSH_MS = {"linear": LINEAR_PUSH_MS, "spot": SPOT_PUSH_MS}
REPEAT_TOP_S = 3.0  # orderbook.1 repeats an unchanged snapshot after this long
MAX_SPOT_ARGS = 10
PING_CUTOFF_S = 600.0  # no ping and no data for this long: the connection is closed

log = logging.getLogger("mdpipe.sim")


def _ms() -> int:
    """The exchange's time now (ms), from the simulator's clock."""
    return clock.now_ms()


def _reply(status: int, body: Any) -> Response:
    data = orjson.dumps(body)
    headers = Headers(
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
         ("Connection", "close")]
    )  # fmt: skip
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


class _Topic:
    """One orderbook.{depth}.{symbol} topic: its update id and the view last pushed."""

    __slots__ = (
        "name", "symbol", "depth", "u", "seq", "bids", "asks", "pushed_at", "skip", "restart",
        "resnap",
    )  # fmt: skip

    def __init__(self, name: str, symbol: str, depth: int, u: int) -> None:
        self.name, self.symbol, self.depth = name, symbol, depth
        self.u = u
        self.seq = 0
        self.bids: dict[str, str] = {}  # price -> size, as sent
        self.asks: dict[str, str] = {}
        self.pushed_at = 0.0
        self.skip = 0  # gap fault: deltas still to drop
        self.restart = False  # restart fault: the next push is a snapshot with u = 1
        self.resnap = False  # snapshot fault: the next push is a snapshot


class Encoder:
    """Bybit's message layout, byte for byte: linear puts `type` before `ts`, spot after."""

    def __init__(self, market: str) -> None:
        self.market = market
        self.linear = market == "linear"

    def book(self, topic: str, kind: str, ts: int, symbol: str, bids: list, asks: list,
             u: int, seq: int, cts: int) -> bytes:  # fmt: skip
        b = ",".join(f'["{p}","{q}"]' for p, q in bids)
        a = ",".join(f'["{p}","{q}"]' for p, q in asks)
        head = (
            f'{{"topic":"{topic}","type":"{kind}","ts":{ts}'
            if self.linear
            else f'{{"topic":"{topic}","ts":{ts},"type":"{kind}"'
        )
        return (
            f'{head},"data":{{"s":"{symbol}","b":[{b}],"a":[{a}],"u":{u},"seq":{seq}}},'
            f'"cts":{cts}}}'
        ).encode()

    def trades(
        self, symbol: str, ts: int, rows: list[tuple[int, str, str, str, str, int]]
    ) -> bytes:
        """rows: (T, S, v, p, i, seq)."""
        parts = []
        for t, side, size, price, trade_id, seq in rows:
            tick = f'"L":"{"PlusTick" if side == "Buy" else "MinusTick"}",' if self.linear else ""
            parts.append(
                f'{{"T":{t},"s":"{symbol}","S":"{side}","v":"{size}","p":"{price}",{tick}'
                f'"i":"{trade_id}","BT":false,"RPI":false,"seq":{seq}}}'
            )
        return (
            f'{{"topic":"publicTrade.{symbol}","type":"snapshot","ts":{ts},'
            f'"data":[{",".join(parts)}]}}'
        ).encode()

    def ack(self, op: str, req_id: str, conn_id: str, ok: bool, message: str | None) -> bytes:
        """The answer to subscribe/unsubscribe (linear ret_msg "", spot the op's name)."""
        if message is None:
            message = "" if self.linear else op
        body = {"success": ok, "ret_msg": message, "conn_id": conn_id, "op": op}
        if req_id:
            body = {"success": ok, "ret_msg": message, "conn_id": conn_id, "req_id": req_id,
                    "op": op}  # fmt: skip
        return orjson.dumps(body)

    def pong(self, req_id: str, conn_id: str) -> bytes:
        """The documented pong."""
        body: dict[str, Any] = {"success": True, "ret_msg": "pong", "conn_id": conn_id}
        if req_id:
            body["req_id"] = req_id
        body["op"] = "ping"
        return orjson.dumps(body)


class SyntheticMarket:
    """The seeded market model, with Bybit's per-symbol cross sequence and trade ids."""

    def __init__(self, cfg: SimConfig, market: str) -> None:
        self.market = market
        self.specs: dict[str, SymbolSpec] = {
            s: symbol_spec(s, FUTURES, cfg.seed) for s in cfg.symbols
        }
        self.model = MarketModel(list(self.specs.values()), FUTURES, cfg.seed, cfg.levels)
        rng = random.Random(f"{cfg.seed}:bybit")
        self.rng = rng
        self.seq = {s: 9_000_000_000 + rng.randrange(10**9) for s in cfg.symbols}
        self.trade_no = {s: 2_290_000_000_000_000_000 + rng.randrange(10**12) for s in cfg.symbols}
        self.symbols = set(cfg.symbols)

    def step(self, frozen: set[str]) -> tuple[SymbolMarket, BookEvent, int] | None:
        """One matching-engine step: (symbol market, event, its seq)."""
        sm = self.model.next_symbol(frozen)
        if sm is None:
            return None
        ev = sm.step()
        sym = sm.spec.symbol
        self.seq[sym] += 1 + self.rng.randrange(0, 4)  # comparable, not contiguous
        return sm, ev, self.seq[sym]

    def view(self, symbol: str, depth: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The top `depth` levels as decimal strings, best first."""
        sm = self.model.symbols[symbol]
        spec = sm.spec
        bids = [(spec.price_str(p), spec.qty_str(q)) for p, q in sm.book.bids.top(depth)]
        asks = [(spec.price_str(p), spec.qty_str(q)) for p, q in sm.book.asks.top(depth)]
        return bids, asks

    def trade_id(self, symbol: str) -> str:
        """Linear: UUID-like; spot: a numeric string."""
        if self.market == "spot":
            self.trade_no[symbol] += 1
            return str(self.trade_no[symbol])
        h = self.rng.getrandbits(128)
        x = f"{h:032x}"
        return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


class BybitSimulator:
    """The simulated Bybit: topics, clients, faults, counters."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.market = cfg.market or MARKETS[0]
        if self.market not in MARKETS:
            raise TapeError(f"bybit has no market {self.market!r} ({', '.join(MARKETS)})")
        self.enc = Encoder(self.market)
        self.hub = Hub(cfg.max_send_buffer)
        self.stats = ServerStats()
        self.schedule = FaultSchedule(cfg.faults)
        self.started = asyncio.Event()
        self._rng = random.Random(f"{cfg.seed}:faults")
        self._ids = itertools.count(1)
        self._subscribers: set[int] = set()
        self._background = BackgroundTasks()
        self.topics: dict[str, _Topic] = {}
        self.fault_counts: dict[str, int] = {}
        self.malformed_sent = 0
        self._malformed_cycle = MalformedCycle()
        self._silent_until = 0.0
        self._frozen: dict[str, float] = {}
        self.events = 0
        self.produced_trades = 0
        self._started_wall = time.time()
        self.tape: TapeFeed | None = None
        if cfg.tape is not None:
            self.tape = TapeFeed(cfg.tape, cfg.speed, cfg.max_speed, cfg.tick)
            self.symbols = self.tape.symbols
            self.synthetic = None
        else:
            self.synthetic = SyntheticMarket(cfg, self.market)
            self.symbols = self.synthetic.symbols
            linear = self.market == "linear"
            self.tickers = {s: TickerBook(spec, linear) for s, spec in self.synthetic.specs.items()}
        # kline topics subscribed (built from the trades from then on), by symbol
        self.klines: dict[str, dict[str, klines.OpenKline]] = {}

    # ----- serving --------------------------------------------------------------------------

    async def serve(self, ready: Callable[[str, int], None]) -> None:
        """Listen, call `ready(host, port)`, and run until SIGINT/SIGTERM."""
        await serve_until_stopped(
            host=self.cfg.host,
            port=self.cfg.port,
            handler=self._handle_ws,
            process_request=self._process_request,
            ready=ready,
            start_now=self.started.set if self.cfg.start == START_IMMEDIATELY else None,
            market=self._run_tape if self.tape is not None else self._run_synthetic,
            hub=self.hub,
            close_timeout=1.0,
            ping_interval=None,  # Bybit clients ping; the server only answers
        )

    async def _run_tape(self) -> None:
        assert self.tape is not None
        await self.tape.run(self)

    async def _process_request(self, conn: SimConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        method = request_method(request)
        if path == "/_sim/stats":
            return _reply(200, self.stats_dict())
        if path == "/_sim/fault":
            if method != "POST":
                return _reply(405, {"ok": False, "error": f"{method} not allowed on {path}"})
            try:
                return _reply(
                    200, self.inject(Fault.from_mapping(orjson.loads(request_body(request))))
                )
            except (FaultError, orjson.JSONDecodeError, ValueError) as exc:
                return _reply(400, {"ok": False, "error": str(exc)})
        if path != f"/v5/public/{self.market}":
            return _reply(404, {"retCode": 10404, "retMsg": f"no route {path} on this simulator"})
        return None

    async def _handle_ws(self, conn: SimConnection) -> None:
        client = Client(conn, False, self.market, next(self._ids))
        conn_id = f"sim-{client.id}-{self._rng.getrandbits(32):08x}"
        self.hub.add(client)
        self.stats.connections_opened += 1
        loop = asyncio.get_running_loop()
        last_ping = [loop.time()]
        watchdog = loop.create_task(self._ping_watchdog(client, last_ping))
        try:
            async for message in conn:
                self.stats.control_requests += 1
                self._on_request(client, conn_id, message, last_ping, loop.time())
                self.hub.flush()
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            self.hub.remove(client)
            self.stats.closed[client.close_reason or "client"] += 1

    async def _ping_watchdog(self, client: Client, last_ping: list[float]) -> None:
        loop = asyncio.get_running_loop()
        cutoff = self.cfg.ping_timeout or PING_CUTOFF_S
        while True:
            await asyncio.sleep(min(cutoff / 4, 5.0))
            if loop.time() - last_ping[0] > cutoff:
                client.close_reason = "ping_timeout"
                await client.conn.close(1000, "no ping")
                return

    def _on_request(self, client: Client, conn_id: str, message: Any, last_ping: list[float],
                    now: float) -> None:  # fmt: skip
        try:
            req = orjson.loads(message)
            op, req_id = req.get("op"), req.get("req_id", "")
        except (orjson.JSONDecodeError, AttributeError):
            self.hub.send(client, self.enc.ack("", "", conn_id, False, "error:invalid request"))
            return
        if op == "ping":
            last_ping[0] = now
            self.hub.send(client, self.enc.pong(req_id if type(req_id) is str else "", conn_id))
            return
        if op not in ("subscribe", "unsubscribe"):
            self.hub.send(
                client, self.enc.ack(str(op), "", conn_id, False, f"error:unknown op {op}")
            )
            return
        args = req.get("args")
        req_id = req_id if type(req_id) is str else ""
        if type(args) is not list or not all(type(a) is str for a in args) or not args:
            self.hub.send(client, self.enc.ack(op, req_id, conn_id, False, "error:args invalid"))
            return
        if self.market == "spot" and len(args) > MAX_SPOT_ARGS:
            self.hub.send(client, self.enc.ack(op, req_id, conn_id, False, "args size >10"))
            return
        if op == "unsubscribe":
            for topic in args:
                if topic in client.subs:
                    client.subs.remove(topic)
                    self.hub.detach(client, topic)
            self.hub.send(client, self.enc.ack(op, req_id, conn_id, True, None))
            return
        for topic in args:
            if not self._known(topic):
                self.hub.send(
                    client, self.enc.ack(op, req_id, conn_id, False, "error:handler not found")
                )
                return
            if topic in client.subs:
                msg = f"error:already subscribed,topic:{topic}"
                self.hub.send(client, self.enc.ack(op, req_id, conn_id, False, msg))
                return
        self.hub.send(client, self.enc.ack(op, req_id, conn_id, True, None))
        for topic in args:
            client.subs.append(topic)
            self.hub.attach(client, topic)
            if topic.startswith("orderbook."):
                snap = self._topic_snapshot(topic)
                if snap is not None:
                    self.hub.send(client, snap)
            elif topic.startswith("tickers."):
                self._ticker_snapshot(client, topic.partition(".")[2])
            elif topic.startswith("kline."):
                interval, sym = klines.topic_interval(topic)
                self.klines.setdefault(sym, {}).setdefault(interval, klines.OpenKline())
        if client.id not in self._subscribers:
            self._subscribers.add(client.id)
            if len(self._subscribers) >= self.cfg.start_clients:
                self.started.set()

    def _known(self, topic: str) -> bool:
        kind, _, rest = topic.partition(".")
        if kind == "publicTrade":
            return rest in self.symbols
        if kind == "tickers":
            return rest in self.symbols and self.synthetic is not None
        if kind == "kline":
            found = klines.topic_interval(topic)
            return found is not None and found[1] in self.symbols and self.synthetic is not None
        if kind == "orderbook":
            depth, _, sym = rest.partition(".")
            return depth.isdigit() and int(depth) in DEPTHS and sym in self.symbols
        return False

    # ----- book topics ----------------------------------------------------------------------

    def _topic(self, name: str) -> _Topic:
        topic = self.topics.get(name)
        if topic is None:
            _, depth, sym = name.split(".")
            topic = _Topic(name, sym, int(depth), 1_000_000 + self._rng.randrange(10**6))
            if self.synthetic is not None:
                bids, asks = self.synthetic.view(sym, topic.depth)
                topic.bids, topic.asks = dict(bids), dict(asks)
                topic.seq = self.synthetic.seq[sym]
            topic.pushed_at = asyncio.get_running_loop().time()
            self.topics[name] = topic
        return topic

    def _topic_snapshot(self, name: str) -> bytes | None:
        """What a new subscriber gets first: the view as of the topic's last push."""
        if self.tape is not None:
            return self.tape.snapshot(self, name)
        topic = self._topic(name)
        now = _ms()
        bids, asks = best_first(topic.bids, topic.asks)
        return self.enc.book(
            name, "snapshot", now, topic.symbol, bids, asks, topic.u, topic.seq, now
        )

    def _push_books(self, tick: int) -> None:
        """Push every book topic whose interval ends at this 10 ms tick."""
        now = asyncio.get_running_loop().time()
        ms = _ms()
        frozen = {s for s, until in self._frozen.items() if until > now}
        for topic in list(self.topics.values()):
            if tick % INTERVAL_TICKS[topic.depth] or topic.symbol in frozen:
                continue
            if not self.hub.wants(topic.name):
                continue
            self._push(topic, now, ms)

    def _push(self, t: _Topic, now: float, ms: int) -> None:
        assert self.synthetic is not None
        bids, asks = self.synthetic.view(t.symbol, t.depth)
        nb, na = dict(bids), dict(asks)
        seq = self.synthetic.seq[t.symbol]
        restart, resnap = t.restart, t.resnap
        if t.depth == 1 or restart or resnap:
            if nb == t.bids and na == t.asks and not restart and not resnap:
                if now - t.pushed_at < REPEAT_TOP_S:
                    return
            else:
                t.u = 1 if restart else t.u + 1
                t.seq = seq
            t.restart = t.resnap = False
            t.bids, t.asks, t.pushed_at = nb, na, now
            self.hub.publish(t.name, self.enc.book(t.name, "snapshot", ms, t.symbol, bids, asks,
                                                   t.u, t.seq, ms))  # fmt: skip
            return
        db = level_changes(t.bids, nb, reverse=True)
        da = level_changes(t.asks, na, reverse=False)
        if not db and not da:
            return
        t.u += 1
        t.seq = seq
        t.bids, t.asks, t.pushed_at = nb, na, now
        if t.skip:
            t.skip -= 1
            return
        self.hub.publish(t.name, self.enc.book(t.name, "delta", ms, t.symbol, db, da, t.u, seq, ms))

    # ----- synthetic market -----------------------------------------------------------------

    async def _run_synthetic(self) -> None:
        loop = asyncio.get_running_loop()
        await self.started.wait()
        assert self.synthetic is not None
        t0 = loop.time()
        done = 0
        tick = 0
        next_push = t0
        rate = self.cfg.rate
        while True:
            now = loop.time()
            if now < self._silent_until:
                await asyncio.sleep(min(self._silent_until - now, 0.05))
                t0 += loop.time() - now  # market time stands still while silent
                next_push = loop.time()
                continue
            due = int((now - t0) * rate) - done
            if due > rate:  # more than a second behind: drop the backlog, no burst
                t0 = now - done / rate
                due = int(rate * TICK_S)
            frozen = {s for s, until in self._frozen.items() if until > now}
            for _ in range(max(due, 0)):
                stepped = self.synthetic.step(frozen)
                if stepped is None:
                    break
                self._trades(*stepped)
                done += 1
                self.events += 1
                if done / rate >= self.schedule.next_due:
                    self._fire_due(done / rate)
            if now >= next_push:
                tick += 1
                self._push_books(tick)
                if tick % (TICKER_PUSH_MS[self.market] // 10) == 0:
                    self._push_tickers(_ms())
                if tick % (klines.PUSH_MS // 10) == 0:
                    self._push_klines(_ms())
                next_push += TICK_S
                if next_push < now:
                    next_push = now + TICK_S
            self.hub.flush()
            await asyncio.sleep(min(0.002, max(0.0, next_push - loop.time())))

    def _ticker_snapshot(self, client: Client, sym: str) -> None:
        """A new subscriber's first tickers message: the whole state as of now."""
        assert self.synthetic is not None
        tb = self.tickers[sym]
        ms = _ms()
        data = tb.fields(ms)
        if data:
            cs = self.synthetic.seq[sym]
            self.hub.send(client, ticker_message(sym, "snapshot", data, ms, cs, self.enc.linear))

    def _push_tickers(self, ms: int) -> None:
        """Linear: the changed fields of every symbol; spot: full snapshots."""
        assert self.synthetic is not None
        now = asyncio.get_running_loop().time()
        for sym, tb in self.tickers.items():
            name = f"tickers.{sym}"
            if not self.hub.wants(name) or self._frozen.get(sym, 0.0) > now:
                continue
            cs = self.synthetic.seq[sym]
            if self.enc.linear:
                data = tb.changed(ms)
                kind = "delta"
            else:
                data, kind = tb.fields(ms), "snapshot"
            if data:
                self.hub.publish(name, ticker_message(sym, kind, data, ms, cs, self.enc.linear))

    def _push_klines(self, ms: int) -> None:
        """Every open candle as it stands; confirmed (and done) once its interval is over."""
        for sym, by_interval in self.klines.items():
            spec = self.synthetic.specs[sym]
            for interval, ok in by_interval.items():
                k = ok.kline
                if k is None:
                    continue  # an interval without trades sends no candle
                confirm = not k.contains(ms)
                topic = f"kline.{interval}.{sym}"
                self.hub.publish(topic, klines.message(topic, interval, spec, k, ok.last_ms, ms,
                                                       confirm))  # fmt: skip
                if confirm:
                    ok.kline = None

    def _kline_trades(self, sym: str, ev: BookEvent, ms: int) -> None:
        """Add the event's trades to the symbol's candles, confirming one the time has left."""
        spec = self.synthetic.specs[sym]
        for interval, ok in self.klines[sym].items():
            topic = f"kline.{interval}.{sym}"
            for f in ev.fills:
                last_ms = ok.last_ms
                closed = klines.on_trade(ok, interval, f.price, f.lots, 0, ms, not f.buyer_maker)
                if closed is not None:
                    self.hub.publish(topic, klines.message(topic, interval, spec, closed, last_ms,
                                                           ms, True))  # fmt: skip

    def _trades(self, sm: SymbolMarket, ev: BookEvent, seq: int) -> None:
        self.tickers[sm.spec.symbol].on_event(ev, sm.top)
        if not ev.fills:
            return
        sym = sm.spec.symbol
        ms = _ms()  # the trades' T
        if sym in self.klines:
            self._kline_trades(sym, ev, ms)
        name = f"publicTrade.{sym}"
        if not self.hub.wants(name):
            return
        assert self.synthetic is not None
        spec = sm.spec
        rows = [
            (ms, "Sell" if f.buyer_maker else "Buy", spec.qty_str(f.lots), spec.price_str(f.price),
             self.synthetic.trade_id(sym), seq)
            for f in ev.fills
        ]  # fmt: skip
        self.produced_trades += len(rows)
        self.hub.publish(name, self.enc.trades(sym, ms, rows))

    # ----- faults ---------------------------------------------------------------------------

    def _fire_due(self, market_time: float) -> None:
        fire_due(self.schedule, market_time, self.inject)

    def inject(self, fault: Fault) -> dict[str, Any]:
        """Apply a fault now; returns what it did."""
        return inject_fault(
            fault,
            venue="bybit",
            symbols=self.symbols,
            handlers=self,
            prefix="_fault_",
            rest_faults=None,
            counts=self.fault_counts,
        )

    def _symbols_of(self, fault: Fault) -> list[str]:
        return [fault.symbol] if fault.symbol else sorted(self.symbols)

    def _fault_disconnect(self, fault: Fault) -> dict[str, Any]:
        clients = self.hub.open_clients()
        disconnect(clients, fault.variant, self._background.spawn)
        return {"connections": len(clients), "variant": fault.variant or "abrupt"}

    def _fault_shutdown(self, fault: Fault) -> dict[str, Any]:
        clients = self.hub.open_clients()
        delay = 1.0 if fault.seconds is None else fault.seconds
        loop = asyncio.get_running_loop()
        for client in clients:
            client.close_reason = "fault_shutdown"
            loop.call_later(
                delay,
                lambda c=client: self._background.spawn(
                    c.conn.close(GOING_AWAY, "server maintenance")
                ),
            )
        return {"connections": len(clients), "close_after_s": delay}

    def _fault_gap(self, fault: Fault) -> dict[str, Any]:
        return gap_feed(self, fault, self._rng)

    def gap(self, symbol: str, count: int) -> None:
        """Drop the next `count` deltas of every deep book topic of `symbol`."""
        if self.tape is not None:
            self.tape.skip[symbol] = self.tape.skip.get(symbol, 0) + count
        for topic in self.topics.values():
            if topic.symbol == symbol and topic.depth > 1:
                topic.skip += count

    def _fault_silence(self, fault: Fault) -> dict[str, Any]:
        return silence_feed(self, fault)

    def silence(self, seconds: float, symbol: str | None) -> None:
        """Push nothing for `seconds`: of `symbol`, or of every topic."""
        until = asyncio.get_running_loop().time() + seconds
        if symbol is None:
            self._silent_until = max(self._silent_until, until)
        else:
            self._frozen[symbol] = max(self._frozen.get(symbol, 0.0), until)

    def _fault_restart(self, fault: Fault) -> dict[str, Any]:
        self._need_synthetic("restart")
        symbols = self._symbols_of(fault)
        for topic in self._book_topics(symbols):
            topic.restart = True
        return {"symbols": symbols}

    def _fault_snapshot(self, fault: Fault) -> dict[str, Any]:
        self._need_synthetic("snapshot")
        symbols = self._symbols_of(fault)
        for topic in self._book_topics(symbols):
            topic.resnap = True
        return {"symbols": symbols}

    def _book_topics(self, symbols: list[str]) -> list[_Topic]:
        """The deep book topics (not orderbook.1) of these symbols."""
        return [t for t in self.topics.values() if t.symbol in symbols and t.depth > 1]

    def _need_synthetic(self, kind: str) -> None:
        if self.tape is not None:
            raise FaultError(f"{kind} needs the synthetic market (a tape replays what it holds)")

    def _fault_malformed(self, fault: Fault) -> dict[str, Any]:
        variants = self._malformed_cycle.variants(fault)
        reached = sent = 0
        for client in self.hub.open_clients():
            books = [
                s
                for s in client.subs
                if s.startswith("orderbook.") and not s.startswith("orderbook.1.")
            ]
            tickers = [s for s in client.subs if s.startswith("tickers.")]
            if fault.symbol:
                books = [s for s in books if s.endswith("." + fault.symbol)]
                tickers = [s for s in tickers if s.endswith("." + fault.symbol)]
            if not books and not tickers:
                continue
            if books:
                topic = self._topic(books[0]) if self.tape is None else None
                u, seq = (topic.u + 1, topic.seq + 1) if topic is not None else (2, 2)
                for variant in variants:
                    self.hub.send(client, self._malformed(variant, books[0], u, seq))
                sent += len(variants)
            if tickers:
                sym = tickers[0].partition(".")[2]
                cs = self.synthetic.seq[sym] if self.synthetic is not None else 0
                for variant in variants:
                    frame = ticker_malformed(
                        variant, sym, _ms(), cs, self.enc.linear, self.cfg.oversized_bytes
                    )
                    self.hub.send(client, frame)
                sent += len(variants)
            reached += 1
        self.hub.flush()
        self.malformed_sent += sent
        return {"connections": reached, "variants": variants, "frames": sent}

    def _malformed(self, variant: str, topic: str, u: int, seq: int) -> bytes:
        """A bad message that claims the next u, so a client that rejects it keeps its sequence."""
        sym = topic.rsplit(".", 1)[1]
        ms = _ms()
        good = self.enc.book(topic, "delta", ms, sym, [("100.0", "1.0")], [], u, seq, ms)
        broken = break_price_text(good, variant)
        if broken is not None:
            return broken
        if variant == "missing_field":
            return good.replace(f',"seq":{seq}'.encode(), b"")
        if variant == "wrong_type":
            return good.replace(f'"u":{u}'.encode(), f'"u":"{u}"'.encode())
        if variant == "unknown_stream":
            return good.replace(topic.encode(), f"orderbook.7.{sym}".encode()).replace(
                b'"orderbook.7', b'"tickers.7'
            )
        return (
            b'{"topic":"' + topic.encode() + b'","pad":"' + b"x" * self.cfg.oversized_bytes + b'"}'
        )

    # ----- stats ----------------------------------------------------------------------------

    def stats_dict(self) -> dict[str, Any]:
        """Everything /_sim/stats reports."""
        return {
            "venue": "bybit",
            "mode": "tape" if self.tape is not None else "synthetic",
            "market": self.market,
            "uptime_s": round(time.time() - self._started_wall, 3),
            **self.stats.to_dict(len(self.hub.clients)),
            "faults": dict(self.fault_counts),
            "malformed_sent": self.malformed_sent,
            "messages": {**self.hub.stats(), "slow_clients_dropped": self.hub.slow_dropped},
            "source": {
                "started": self.started.is_set(),
                "events": self.events if self.tape is None else self.tape.sent,
                "trades": self.produced_trades,
                "topics": {n: {"u": t.u, "seq": t.seq} for n, t in self.topics.items()},
            },
        }


def level_changes(old: dict[str, str], new: dict[str, str], reverse: bool) -> list[tuple[str, str]]:
    """Levels that changed from `old` to `new` (size "0" for removed ones), best first."""
    out = [(p, q) for p, q in new.items() if old.get(p) != q]
    out += [(p, "0") for p in old if p not in new]
    out.sort(key=lambda x: float(x[0]), reverse=reverse)
    return out


@dataclass(slots=True)
class TapeFrame:
    """One recorded frame: receive time, topic ("" for a frame without one), exact bytes."""

    ns: int
    topic: str
    raw: bytes


class TapeFeed:
    """Replays a tape of `<receive ns> <raw frame>` lines to the topics' subscribers.

    Book topics are also kept as books (snapshots and deltas applied) so a client that
    subscribes mid-tape first gets the topic's book as of its last message, as Bybit would.
    Frames that are not topic messages (acks, pongs) are skipped.
    """

    def __init__(self, path: Path, speed: float, max_speed: bool, tick: float) -> None:
        self.frames: list[TapeFrame] = []
        self.symbols: set[str] = set()
        for _, ns, raw in read_tape_lines(path, "frame"):
            try:
                topic = orjson.loads(raw).get("topic")
            except (orjson.JSONDecodeError, AttributeError):
                topic = None  # a recorded bad frame: replayed to every subscriber
            if topic is None and raw.lstrip().startswith(b'{"success"'):
                continue
            self.frames.append(TapeFrame(ns, topic or "", raw))
            if topic and "." in topic:
                self.symbols.add(topic.rsplit(".", 1)[1])
        if not self.frames:
            raise TapeError(f"{path}: no frames")
        self.speed, self.max_speed, self.tick = speed, max_speed, tick
        self.books: dict[str, tuple[dict[str, str], dict[str, str], int, int]] = {}
        self.skip: dict[str, int] = {}
        self.sent = 0

    def _apply(self, topic: str, raw: bytes) -> None:
        msg = orjson.loads(raw)
        data = msg["data"]
        if msg.get("type") == "snapshot":
            bids: dict[str, str] = {}
            asks: dict[str, str] = {}
        else:
            bids, asks, _, _ = self.books.get(topic, ({}, {}, 0, 0))
        for side, levels in ((bids, data["b"]), (asks, data["a"])):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.books[topic] = (bids, asks, data["u"], data["seq"])

    def snapshot(self, sim: BybitSimulator, topic: str) -> bytes | None:
        """The topic's book as of its last replayed message (None before its first)."""
        book = self.books.get(topic)
        if book is None:
            return None
        bids, asks, u, seq = book
        ms = _ms()
        b, a = best_first(bids, asks)
        return sim.enc.book(topic, "snapshot", ms, topic.rsplit(".", 1)[1], b, a, u, seq, ms)

    async def run(self, sim: BybitSimulator) -> None:
        """Send every frame at its recorded pace (or as fast as clients read, with --max)."""
        await sim.started.wait()

        def publish(i: int, j: int, now: float) -> int:
            return self._publish(sim, i, j, now)

        await replay_paced(
            self.frames,
            publish,
            sim.hub,
            speed=self.speed,
            max_speed=self.max_speed,
            tick=self.tick,
            silent_until=lambda: sim._silent_until,
        )

    def _publish(self, sim: BybitSimulator, i: int, j: int, now: float) -> int:
        """Send frames[i:j] (fewer if a fault silenced the feed); returns the next index."""
        hub = sim.hub
        while i < j and sim._silent_until <= now:
            frame = self.frames[i]
            i += 1
            topic, raw = frame.topic, frame.raw
            book = topic.startswith("orderbook.") and not topic.startswith("orderbook.1.")
            if book:
                self._apply(topic, raw)
                sym = topic.rsplit(".", 1)[1]
                if self.skip.get(sym) and b'"delta"' in raw:
                    self.skip[sym] -= 1
                    continue
            if topic:
                hub.publish(topic, raw)
            else:
                for client in list(hub.clients):
                    hub.send(client, raw)
            self.sent += 1
        return i


def synthetic_frames(
    symbol: str,
    depth: int,
    pushes: int,
    steps_per_push: int,
    *,
    market: str = "linear",
    seed: int = 1,
    levels: int = 400,
    start_ns: int = 1_750_000_000_000_000_000,
) -> list[tuple[int, bytes]]:
    """(receive ns, frame) of what a subscriber to orderbook.{depth} and publicTrade of one
    symbol gets: the snapshot, then per push the trades and the delta of `steps_per_push`
    market steps, 20 ms apart. The tape line format; for benches and tests."""
    cfg = SimConfig(symbols=[symbol], seed=seed, levels=levels)
    mkt = SyntheticMarket(cfg, market)
    enc = Encoder(market)
    topic = f"orderbook.{depth}.{symbol}"
    bids, asks = mkt.view(symbol, depth)
    u, seq, ns = 1_000_000, mkt.seq[symbol], start_ns
    ms = ns // 1_000_000
    out = [(ns, enc.book(topic, "snapshot", ms, symbol, bids, asks, u, seq, ms))]
    old_b, old_a = dict(bids), dict(asks)
    spec = mkt.specs[symbol]
    for _ in range(pushes):
        ns += 20_000_000
        ms = ns // 1_000_000
        for _ in range(steps_per_push):
            sm, ev, seq = mkt.step(set())  # type: ignore[misc]
            if ev.fills:
                rows = [(ms, "Sell" if f.buyer_maker else "Buy", spec.qty_str(f.lots),
                         spec.price_str(f.price), mkt.trade_id(symbol), seq) for f in ev.fills]  # fmt: skip
                out.append((ns, enc.trades(symbol, ms, rows)))
        bids, asks = mkt.view(symbol, depth)
        new_b, new_a = dict(bids), dict(asks)
        db, da = level_changes(old_b, new_b, True), level_changes(old_a, new_a, False)
        old_b, old_a = new_b, new_a
        if db or da:
            u += 1
            out.append((ns, enc.book(topic, "delta", ms, symbol, db, da, u, seq, ms)))
    return out


def build(cfg: SimConfig) -> BybitSimulator:
    """The Bybit simulator (linear unless --market spot)."""
    return BybitSimulator(cfg)
