"""The publisher's Redis side: one pipelined connection, outage detection and backoff reconnects.

Nothing here ever waits longer than a socket timeout: redis-py's own retries are switched off
(they would sleep inside the publisher's loop), a failed round trip marks Redis down at once,
and reconnection is only attempted when the backoff says so, from the publisher's loop.
"""

from __future__ import annotations

import logging
import random
import time

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.exceptions import RedisError
from redis.retry import Retry

log = logging.getLogger("mdpipe.publisher")

# A blackholed host must not stall the loop for long: the rings keep filling meanwhile.
CONNECT_TIMEOUT = 1.0
SOCKET_TIMEOUT = 2.0


def make_client(url: str, password: str | None) -> redis.Redis:
    """A redis-py client for redis://, rediss:// (TLS) or unix:// URLs, without built-in retries.

    A password in the URL wins over `password`; TLS options such as ssl_ca_certs may be given
    as URL query parameters (rediss://host:6380/0?ssl_ca_certs=/etc/ssl/ca.pem).
    """
    return redis.Redis.from_url(
        url,
        password=password,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        client_name="mdpipe-publisher",
    )


class Backoff:
    """Exponential reconnect delays from initial to maximum, with +-20 % jitter against herds."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.delay = initial

    def next(self) -> float:
        """The delay before the next attempt; doubles the one after it."""
        delay = self.delay * random.uniform(0.8, 1.2)
        self.delay = min(self.delay * 2, self.maximum)
        return min(delay, self.maximum)

    def reset(self) -> None:
        self.delay = self.initial


class RedisSink:
    """Sends pipelines to Redis; remembers whether Redis is up and when to try again."""

    def __init__(self, url: str, password: str | None, initial: float, maximum: float) -> None:
        self.client = make_client(url, password)
        self.pipe: Pipeline = self.client.pipeline(transaction=False)
        self.backoff = Backoff(initial, maximum)
        self.up = False
        self.ever_up = False
        self.retry_at = 0.0  # time.monotonic() of the next reconnect attempt
        self.last_error = ""

    def send(self) -> bool:
        """Execute the queued commands; False (and Redis marked down) when they failed."""
        try:
            self.pipe.execute()
        except (RedisError, OSError) as exc:
            self._down(exc)
            return False
        self.backoff.reset()
        return True

    def discard(self) -> None:
        """Forget the queued commands (Redis is down)."""
        self.pipe.reset()

    def due(self, now: float) -> bool:
        """True when Redis is down and the backoff allows another attempt."""
        return not self.up and now >= self.retry_at

    def connect(self) -> bool:
        """One reconnect attempt (a PING); True when Redis answers."""
        try:
            self.client.ping()
        except (RedisError, OSError) as exc:
            self._down(exc)
            return False
        self.up = True
        self.ever_up = True
        return True

    def _down(self, exc: BaseException) -> None:
        was_up = self.up
        self.up = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.pipe.reset()
        # Drop every pooled socket: after a timeout a reply may still be in flight on it.
        self.client.connection_pool.disconnect()
        self.retry_at = time.monotonic() + self.backoff.next()
        if was_up:
            log.warning("redis unreachable, publishing paused: %s", self.last_error)
        else:
            log.debug("redis still unreachable: %s", self.last_error)

    def close(self) -> None:
        self.pipe.reset()
        self.client.close()
