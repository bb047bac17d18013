"""Applies faults to the running simulator: its connections, its source, its REST answers."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import orjson

from mdpipe.sim import clock
from mdpipe.sim.fault_effects import (
    GOING_AWAY,
    MalformedCycle,
    Spawn,
    disconnect,
    gap_feed,
    inject_fault,
    silence_feed,
)
from mdpipe.sim.faults import Fault, RestFaultWindows
from mdpipe.sim.hub import Hub
from mdpipe.sim.malformed import malformed_message
from mdpipe.sim.source import Source

log = logging.getLogger("mdpipe.sim")


class FaultInjector:
    """Turns a Fault into what clients observe; deterministic for a given seed."""

    def __init__(
        self,
        hub: Hub,
        source: Source,
        rest_faults: RestFaultWindows,
        seed: int,
        oversized_bytes: int,
        spawn: Spawn,
    ) -> None:
        self.hub = hub
        self.source = source
        self.rest_faults = rest_faults
        self.oversized_bytes = oversized_bytes
        self.spawn = spawn  # runs a coroutine in the background (closing handshakes)
        self.counts: dict[str, int] = {}
        self.malformed_sent = 0
        self._rng = random.Random(f"{seed}:faults")
        self._malformed_cycle = MalformedCycle()

    def inject(self, fault: Fault) -> dict[str, Any]:
        """Apply a fault now; returns what it did (the POST /_sim/fault answer)."""
        return inject_fault(
            fault,
            venue="binance",
            symbols=self.source.symbols,
            handlers=self,
            prefix="_",
            rest_faults=self.rest_faults,
            counts=self.counts,
        )

    def _disconnect(self, fault: Fault) -> dict[str, Any]:
        clients = self.hub.open_clients()
        disconnect(clients, fault.variant, self.spawn)
        return {
            "connections": len(clients),
            "variant": fault.variant or "abrupt",
            "clients": [{"id": c.id, "route": c.route, "streams": list(c.subs)} for c in clients],
        }

    def _gap(self, fault: Fault) -> dict[str, Any]:
        return gap_feed(self.source, fault, self._rng)

    def _silence(self, fault: Fault) -> dict[str, Any]:
        return silence_feed(self.source, fault)

    def _malformed(self, fault: Fault) -> dict[str, Any]:
        variants = self._malformed_cycle.variants(fault)
        now_ms = clock.now_ms()
        reached = 0
        for client in self.hub.open_clients():
            delivered = [s for s in client.subs if client in self.hub.receivers(s)]
            if fault.symbol:
                delivered = [s for s in delivered if s.startswith(fault.symbol.lower() + "@")]
            if not delivered:
                continue
            stream = delivered[0]
            symbol = stream.partition("@")[0].upper()
            last_id = self.source.last_update_id(symbol) if symbol in self.source.symbols else 0
            for variant in variants:
                message = malformed_message(
                    variant,
                    stream,
                    client.combined,
                    self.source.market,
                    last_id,
                    now_ms,
                    self.oversized_bytes,
                )
                self.hub.send(client, message)
            reached += 1
        self.hub.flush()
        self.malformed_sent += reached * len(variants)
        return {"connections": reached, "variants": variants}

    def _shutdown(self, fault: Fault) -> dict[str, Any]:
        # Binance's market streams announce it unwrapped, even on combined connections.
        event = orjson.dumps({"e": "serverShutdown", "E": clock.now_ms()})
        clients = self.hub.open_clients()
        for client in clients:
            client.close_reason = "fault_shutdown"
            self.hub.send(client, event)
        self.hub.flush()
        delay = 1.0 if fault.seconds is None else fault.seconds
        loop = asyncio.get_running_loop()
        for client in clients:
            loop.call_later(
                delay, lambda c=client: self.spawn(c.conn.close(GOING_AWAY, "server shutdown"))
            )
        return {"connections": len(clients), "close_after_s": delay}
