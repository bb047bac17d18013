"""REST depth snapshots, fetched on a helper thread so a slow exchange never stalls the feed."""

from __future__ import annotations

import http.client
import queue
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from mdpipe.ingest.inbox import Inbox
from mdpipe.venues.pacing import WeightBudget

REST_TIMEOUT = 10.0  # seconds for connect and for each read of a snapshot request
_USER_AGENT = "mdpipe-ingest"


@dataclass
class SnapshotRequest:
    """Fetch `url` for symbol; epoch tells the loop whether the answer is still wanted."""

    symbol: str
    url: str
    epoch: int


@dataclass
class SnapshotReply:
    """What the exchange answered: status 0 means no HTTP answer at all (see error)."""

    symbol: str
    epoch: int
    status: int
    body: bytes
    retry_after: float | None
    error: str
    elapsed: float


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class HttpGetter:
    """GETs over one kept-alive connection per host, reconnecting after any failure."""

    def __init__(self, timeout: float = REST_TIMEOUT) -> None:
        self.timeout = timeout
        self._conns: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self.headers: http.client.HTTPMessage | None = None  # of the last answer

    def get(self, url: str) -> tuple[int, bytes, float | None]:
        """(status, body, Retry-After seconds); raises OSError / HTTPException on failure."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        conn = self._conns.get(key)
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = self._conns[key] = cls(parts.netloc, timeout=self.timeout)
        path = parts.path + ("?" + parts.query if parts.query else "")
        try:
            conn.request("GET", path, headers={"User-Agent": _USER_AGENT})
            resp = conn.getresponse()
            body = resp.read()
        except BaseException:
            conn.close()
            del self._conns[key]
            raise
        self.headers = resp.headers
        if resp.will_close:
            conn.close()
            del self._conns[key]
        return resp.status, body, _retry_after(resp.getheader("Retry-After"))

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


class SnapshotFetcher:
    """One thread fetching snapshots in request order; honours Retry-After before the next one.

    With a venue's weight `budget` (`mdpipe.venues.pacing.WeightBudget`), each request
    waits until the budget allows it, and every answer's `weight_header` feeds it back.
    """

    def __init__(
        self,
        inbox: Inbox,
        timeout: float = REST_TIMEOUT,
        budget: WeightBudget | None = None,
        weight_header: str = "",
    ) -> None:
        self._inbox = inbox
        self.budget = budget
        self._weight_header = weight_header
        self.paced_seconds = 0.0  # time spent waiting for the weight budget
        self._getter = HttpGetter(timeout)
        self._requests: queue.SimpleQueue[SnapshotRequest | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()

    def request(self, req: SnapshotRequest) -> None:
        """Queue a fetch; the reply arrives in the inbox."""
        self._requests.put(req)

    def _run(self) -> None:
        while not self._stop.is_set():
            req = self._requests.get()
            if req is None:
                break
            if not self._paced():
                break
            t0 = time.monotonic()
            status, body, retry_after, error = 0, b"", None, ""
            try:
                status, body, retry_after = self._getter.get(req.url)
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            elapsed = time.monotonic() - t0
            if self.budget is not None and status:
                self.budget.answered(time.time(), status, self._used_weight(), retry_after)
            self._inbox.post(
                SnapshotReply(req.symbol, req.epoch, status, body, retry_after, error, elapsed)
            )
            if status in (418, 429) and self.budget is None:
                # The exchange bans IPs that keep asking while rate-limited: pause every request.
                self._stop.wait(retry_after if retry_after is not None else 1.0)
        self._getter.close()

    def _paced(self) -> bool:
        """Wait until the weight budget allows one more request; False when stopping."""
        budget = self.budget
        if budget is None:
            return True
        while (wait := budget.wait(time.time())) > 0:
            self.paced_seconds += wait
            if self._stop.wait(wait):
                return False
        budget.sent(time.time())
        return True

    def _used_weight(self) -> int | None:
        value = self._getter.headers.get(self._weight_header) if self._getter.headers else None
        return int(value) if value and value.isdigit() else None

    def close(self) -> None:
        """Stop the thread (an in-flight request ends at its timeout at the latest)."""
        self._stop.set()
        self._requests.put(None)
        self._thread.join(timeout=0.5)
