"""One sampler thread builds every dashboard frame; any number of streams share them.

The sampler runs only while a page is open. Each tick (10 a second) it reads the segment
headers once, builds the instance view once and one market view per watched (ring, symbol),
serializes each once, and publishes them under a short lock. Streams wait on a condition
and write the bytes outside any lock, each on its own connection's thread: a slow or gone
client holds up only itself.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import orjson

from mdpipe.dashboard.instance_view import InstanceView
from mdpipe.dashboard.market_view import MarketView
from mdpipe.shm.segment import iter_status

log = logging.getLogger("mdpipe.dashboard")

INTERVAL_S = 0.1  # 10 frames a second
IDLE_STOP_S = 2.0  # the sampler stops this long after the last page closed
MARKETS_EVERY = 10  # frames between two copies of the (unchanged) list of markets


class TooManyStreamsError(RuntimeError):
    """Every stream slot is taken."""


@dataclass(eq=False)
class Subscription:
    """One open page: which (books ring, symbol) it watches ('' picks the first)."""

    ring: str
    symbol: str
    tick: int = 0
    key: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.ring, self.symbol)


class Hub:
    """Frames for every open dashboard page of one instance."""

    def __init__(self, instance: str, max_streams: int, interval: float = INTERVAL_S) -> None:
        self.instance = instance
        self.max_streams = max_streams
        self.interval = interval
        self._cond = threading.Condition()
        self._subs: set[Subscription] = set()
        self._frames: dict[tuple[str, str], bytes] = {}
        self._tick = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._last_error = ""
        self._markets: list[dict] = []
        self._new_page = False  # a page subscribed since the last frame: send it the markets

    # ----- streams ------------------------------------------------------------------------

    def subscribe(self, ring: str, symbol: str) -> Subscription:
        """A slot for one page (TooManyStreamsError when all are taken)."""
        sub = Subscription(ring, symbol)
        with self._cond:
            if self._closed:
                raise TooManyStreamsError("the server is stopping")
            if len(self._subs) >= self.max_streams:
                raise TooManyStreamsError(
                    f"{self.max_streams} dashboard streams are open (http.dashboard_streams)"
                )
            self._subs.add(sub)
            self._new_page = True
            sub.tick = self._tick
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dashboard-sampler", daemon=True
                )
                self._thread.start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._cond:
            self._subs.discard(sub)

    def next_frame(self, sub: Subscription, timeout: float) -> bytes | None:
        """The next frame for this page, or None after timeout or when the hub closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._tick > sub.tick, timeout)
            if self._closed or self._tick <= sub.tick:
                return None
            sub.tick = self._tick
            return self._frames.get(sub.key)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def streams(self) -> int:
        with self._cond:
            return len(self._subs)

    def close(self) -> None:
        """End every stream and the sampler."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)

    # ----- sampler ------------------------------------------------------------------------

    def _run(self) -> None:
        view = InstanceView(self.instance)
        market = MarketView(self.instance)
        idle_since: float | None = None
        next_at = time.monotonic()
        try:
            while True:
                started = time.monotonic()
                # A fixed cadence: a late frame does not push back the ones after it, so
                # the rate holds at 1/interval on a busy machine (one that falls a whole
                # frame behind starts over rather than bursting).
                next_at = max(next_at + self.interval, started)
                with self._cond:
                    if self._closed:
                        return
                    keys = {sub.key for sub in self._subs}
                    new_page, self._new_page = self._new_page, False
                    if not keys:
                        idle_since = idle_since or started
                        if started - idle_since >= IDLE_STOP_S:
                            self._thread = None  # decided under the lock subscribe() takes
                            return
                    else:
                        idle_since = None
                if keys:
                    frames = self._build(view, market, keys, new_page)
                    with self._cond:
                        self._frames = frames
                        self._tick += 1
                        self._cond.notify_all()
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, max(0.0, next_at - time.monotonic()))
        finally:
            with self._cond:
                if self._thread is threading.current_thread():
                    self._thread = None  # after a crash: the next page starts a new one
            market.close()

    def _build(
        self,
        view: InstanceView,
        market: MarketView,
        keys: set[tuple[str, str]],
        new_page: bool,
    ) -> dict[tuple[str, str], bytes]:
        try:
            statuses = {st.ring: st for st in iter_status(self.instance)}
            inst = view.sample(list(statuses.values()))
            markets = inst.pop("markets")
            resolved = {key: self._resolve(key, markets) for key in keys}
            # The list of markets (every symbol of every books ring) can be long and rarely
            # changes: it goes out when it changed, to a new page, and once a second.
            if new_page or markets != self._markets or self._tick % MARKETS_EVERY == 0:
                inst["markets"] = markets
            self._markets = markets
            market.refresh(statuses, {key for key in resolved.values() if key[0]})
            head = b'{"instance":' + orjson.dumps(inst) + b',"market":'
            frames = {}
            for key, (ring, symbol) in resolved.items():
                body = orjson.dumps(market.frame(ring, symbol, statuses)) if ring else b"null"
                frames[key] = b"data: " + head + body + b"}\n\n"
            self._last_error = ""
            return frames
        except Exception as exc:  # keep serving: a page shows the error, the log has it once
            text = f"{type(exc).__name__}: {exc}"
            if text != self._last_error:
                log.exception("dashboard frame failed")
                self._last_error = text
            err = b"event: failure\ndata: " + orjson.dumps({"error": text}) + b"\n\n"
            return dict.fromkeys(keys, err)

    @staticmethod
    def _resolve(key: tuple[str, str], markets: list[dict]) -> tuple[str, str]:
        """('', '') or a partial choice -> the first market matching it ('' when none)."""
        ring, symbol = key
        if ring and symbol:
            return key
        for m in markets:
            if (not ring or m["ring"] == ring) and (not symbol or m["symbol"] == symbol):
                return m["ring"], m["symbol"]
        return ring, symbol
