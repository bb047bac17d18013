"""One way to run a simulator's server: listen, announce the port, run the market until
SIGINT/SIGTERM, then close every connection politely (1001) and cut off the ones that hang."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from websockets.asyncio.server import serve
from websockets.http11 import Request, Response

from mdpipe.sim.connection import SimConnection
from mdpipe.sim.hub import Hub

Job = Callable[[], Coroutine[Any, Any, None]]


async def serve_until_stopped(
    *,
    host: str,
    port: int,
    handler: Callable[[SimConnection], Awaitable[None]],
    process_request: Callable[[SimConnection, Request], Awaitable[Response | None]],
    ready: Callable[[str, int], None],
    start_now: Callable[[], None] | None,
    market: Job,
    hub: Hub,
    close_timeout: float,
    helpers: tuple[Job, ...] = (),
    **ws_options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM: `ready(host, port)` once bound, `start_now()` (when the
    market starts without waiting for subscribers), `market()` and `helpers` as tasks.

    A market that fails ends the process with its error; one that finishes (a tape played
    once) leaves the server serving until stopped. `ws_options` go to websockets' serve.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await serve(
        handler,
        host,
        port,
        process_request=process_request,
        create_connection=SimConnection,
        compression=None,
        close_timeout=close_timeout,
        server_header=None,
        **ws_options,
    )
    tasks: list[asyncio.Task[None]] = []
    try:
        bound_host, bound_port = server.sockets[0].getsockname()[:2]
        ready(bound_host, bound_port)
        if start_now is not None:
            start_now()
        market_task = loop.create_task(market())
        stop_task = loop.create_task(stop.wait())
        tasks = [market_task, stop_task, *(loop.create_task(job()) for job in helpers)]
        await asyncio.wait({market_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if market_task.done():
            market_task.result()  # a crashed market ends the process with its error
            await stop_task  # a finished tape keeps serving its final book
    finally:
        for task in tasks:
            task.cancel()
        # Going away (1001) to every client; one that does not answer in time is cut off.
        server.close()
        try:
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), close_timeout)
        except TimeoutError:
            for client in list(hub.clients):
                client.conn.transport.abort()
            # What still runs are REST calls waiting (on a tape snapshot, a rest_slow).
            for task in list(server.handler_tasks):
                task.cancel()
            await server.wait_closed()
