"""A WebSocket proxy that relays the simulator's streams and slips bad frames in between.

An ingest process pointed at the proxy (feeds.ws_url) sees the exchange's real stream with
`per_message` extra frames after every real one until `bad` is used up; REST snapshots go to
the simulator directly (feeds.rest_url). Frames are written raw, like the simulator's own
hub, so bad frames may carry any bytes, invalid UTF-8 included, as a broken server would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from mdpipe.sim.hub import text_frame


class MutatingProxy:
    """Listens on 127.0.0.1 (a free port) in a thread of its own; `sent` counts bad frames."""

    def __init__(self, upstream: str, bad: Sequence[bytes], per_message: int) -> None:
        self.upstream = upstream
        self.frames = [text_frame(b) for b in bad]
        self.per_message = per_message
        self.sent = 0
        self.relayed = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),))

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> MutatingProxy:
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"
        return self

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        # No keepalive pings either way: a ping queued behind megabytes of frames that a loaded
        # machine relays slowly is not answered in time, and websockets would then close a
        # connection that is merely slow (and the tape's remaining bad frames never go out).
        async with serve(
            self._relay, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _relay(self, conn: ServerConnection) -> None:
        url = self.upstream + conn.request.path
        try:
            async with connect(url, compression=None, max_size=None, ping_interval=None) as up:
                while True:
                    good = await up.recv(decode=False)
                    k = min(self.per_message, len(self.frames) - self.sent)
                    batch = [text_frame(good), *self.frames[self.sent : self.sent + k]]
                    self.sent += k
                    self.relayed += 1
                    conn.transport.write(b"".join(batch))
                    if conn.transport.get_write_buffer_size() > 1 << 20:
                        await conn.drain()
        except (ConnectionClosed, OSError):
            pass

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
