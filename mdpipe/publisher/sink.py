"""The publisher's Redis side: pipelined connections, outage detection, backoff reconnects.

One connection to a single Redis, or one per master of a Redis Cluster (found with CLUSTER
SLOTS on connect; each command goes to the master of its slot, and one symbol's names share a
slot, so its commands keep their order). Nothing here ever waits longer than a socket timeout:
redis-py's own retries are switched off (they would sleep inside the publisher's loop), a
failed round trip marks Redis down at once, and reconnection is only attempted when the
backoff says so, from the publisher's loop.
"""

from __future__ import annotations

import logging
import random
import time
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

log = logging.getLogger("mdpipe.publisher")

# A blackholed host must not stall the loop for long: the rings keep filling meanwhile.
CONNECT_TIMEOUT = 1.0
SOCKET_TIMEOUT = 2.0
SLOTS = 16384


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


def node_url(url: str, host: str, port: int) -> str:
    """The configured URL (scheme, credentials, TLS options) pointed at another cluster node."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + (f"[{host}]" if ":" in host else host)
    return urlunsplit((parts.scheme, f"{netloc}:{port}", "/0", parts.query, ""))


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


def bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def command(*args: bytes) -> bytes:
    """RESP of a whole command."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


def publish_prefix(channel: bytes, sharded: bool = False) -> bytes:
    """RESP of `PUBLISH channel` (SPUBLISH on a cluster) up to the message, built once."""
    return b"*3\r\n" + bulk(b"SPUBLISH" if sharded else b"PUBLISH") + bulk(channel)


def set_prefix(key: bytes) -> bytes:
    """RESP of `SET key` up to the value (the sink appends the value and `EX ttl`)."""
    return b"*5\r\n" + bulk(b"SET") + bulk(key)


def xadd_prefix(stream: bytes, maxlen: int) -> bytes:
    """RESP of `XADD stream MAXLEN ~ maxlen * d` up to the payload (then `n <number>` follows)."""
    head = (b"XADD", stream, b"MAXLEN", b"~", b"%d" % maxlen, b"*", b"d")
    return b"*10\r\n" + b"".join(bulk(a) for a in head)


_N = bulk(b"n")
_RECV_BYTES = 1 << 18


class _Node:
    """One connection, the commands queued for it and the reader of their replies."""

    __slots__ = ("conn", "out", "pending", "addr", "replies")

    def __init__(self, conn: redis.connection.AbstractConnection, addr: str) -> None:
        self.conn, self.addr = conn, addr
        self.out: list[bytes] = []
        self.pending = 0
        self.replies = hiredis.Reader()

    def read_replies(self) -> hiredis.ReplyError | None:
        """Read the replies of the `pending` commands sent; the first error reply, if any.

        Straight from the connection's socket into hiredis: redis-py's read_response() costs
        ~3 us of Python per reply, more than the rest of a book's way through the publisher.
        Nothing else is in flight on the connection then, so redis-py's own buffer is empty.
        """
        sock = self.conn._sock
        reader = self.replies
        gets = reader.gets
        left = self.pending
        first_error = None
        while left:
            reply = gets()
            if reply is False:
                data = sock.recv(_RECV_BYTES)
                if not data:
                    raise RedisConnectionError("Connection closed by server.")
                reader.feed(data)
            else:
                left -= 1
                if first_error is None and isinstance(reply, hiredis.ReplyError):
                    first_error = reply
        self.pending = 0
        return first_error


class RedisSink:
    """Pipelines commands to Redis; remembers whether Redis is up and when to try again.

    redis-py owns the connections (URL parsing, TLS, AUTH, SELECT, timeouts); the commands
    are appended as RESP built from prefixes precomputed per channel, and a round trip is one
    sendall per node of all its commands (or a few: push() sends what is queued so far while
    more is encoded) followed by their replies, read from the socket by a hiredis reader of
    our own. Pipeline.execute() does the same with per-command Python packing and reply
    handling that measured ~4 us of CPU per command against ~0.7 us here, the difference
    between keeping up with a busy feed on one core and not.

    Every queueing method takes the slot of its key (0 outside a cluster), from key_slot().
    """

    def __init__(
        self, url: str, password: str | None, initial: float, maximum: float, ttl: int
    ) -> None:
        self.url, self.password = url, password
        self.client = make_client(url, password)
        self.seed: redis.connection.AbstractConnection | None = None
        self.nodes: list[_Node] = []
        self.route: list[_Node] = []  # slot -> node (one entry outside a cluster)
        self.cluster = False
        self.ex = bulk(b"EX") + bulk(str(ttl).encode())
        self.pending = 0  # commands queued
        self.backoff = Backoff(initial, maximum)
        self.up = False
        self.ever_up = False
        self.retry_at = 0.0  # time.monotonic() of the next reconnect attempt
        self.last_error = ""
        self.broken: BaseException | None = None  # a push() failed: send() reports it

    def _node(self, slot: int) -> _Node:
        route = self.route
        return route[slot] if self.cluster else route[0]

    def publish(self, slot: int, prefix: bytes, payload: bytes) -> None:
        """Queue a PUBLISH or SPUBLISH (prefix from publish_prefix)."""
        node = self._node(slot)
        node.out += (prefix, b"$%d\r\n" % len(payload), payload, b"\r\n")
        node.pending += 1
        self.pending += 1

    def publish_many(self, targets: list[tuple[int, bytes]], payloads: list[bytes]) -> None:
        """Queue a PUBLISH or SPUBLISH of each payload to its target's (slot, prefix), in order."""
        if self.cluster:
            route = self.route
            for (slot, prefix), payload in zip(targets, payloads, strict=True):
                node = route[slot]
                node.out += (prefix, b"$%d\r\n" % len(payload), payload, b"\r\n")
                node.pending += 1
            self.pending += len(payloads)
            return
        node = self.route[0]
        out = node.out
        for (_, prefix), payload in zip(targets, payloads, strict=True):
            out += (prefix, b"$%d\r\n" % len(payload), payload, b"\r\n")
        node.pending += len(payloads)
        self.pending += len(payloads)

    def set_many(self, items: list[tuple[int, bytes, bytes]]) -> None:
        """Queue a SET with the key TTL of each (slot, prefix, value)."""
        ex = self.ex
        if self.cluster:
            for slot, prefix, value in items:
                node = self.route[slot]
                node.out += (prefix, b"$%d\r\n" % len(value), value, b"\r\n", ex)
                node.pending += 1
        else:
            node = self.route[0]
            out = node.out
            for _, prefix, value in items:
                out += (prefix, b"$%d\r\n" % len(value), value, b"\r\n", ex)
            node.pending += len(items)
        self.pending += len(items)

    def set(self, slot: int, prefix: bytes, value: bytes) -> None:
        """Queue a SET with the key TTL (prefix from set_prefix)."""
        node = self._node(slot)
        node.out += (prefix, b"$%d\r\n" % len(value), value, b"\r\n", self.ex)
        node.pending += 1
        self.pending += 1

    def xadd(self, slot: int, prefix: bytes, payload: bytes, n: int) -> None:
        """Queue an XADD of payload numbered n (prefix from xadd_prefix)."""
        node = self._node(slot)
        node.out += (prefix, b"$%d\r\n" % len(payload), payload, b"\r\n", _N, bulk(b"%d" % n))
        node.pending += 1
        self.pending += 1

    def raw(self, slot: int, resp: bytes) -> None:
        """Queue a command already in RESP (from command())."""
        node = self._node(slot)
        node.out.append(resp)
        node.pending += 1
        self.pending += 1

    def push(self) -> None:
        """Send what is queued without waiting: Redis works on it while more is queued.

        The replies are read by send(), which also reports a failure met here.
        """
        if not self.up or self.broken is not None:
            return
        try:
            for node in self.nodes:
                if node.out:
                    data = b"".join(node.out)
                    node.out.clear()
                    node.conn.send_packed_command((data,), check_health=False)
        except (RedisError, OSError) as exc:
            self.broken = exc

    def send(self) -> bool:
        """Send the queued commands and read every reply; False (Redis marked down) on failure.

        An error reply (a refused SET under maxmemory, NOAUTH after a restart, MOVED after a
        resharding, ...) counts as a failure too: the commands are not known to have landed,
        and a reconnect (which reloads the cluster's slots) follows.
        """
        if not self.pending:
            return True
        self.pending = 0
        busy = [node for node in self.nodes if node.pending]
        if not self.up:
            self._down(ConnectionError("not connected"))
            return False
        if self.broken is not None:
            self._down(self.broken)
            return False
        refused: ResponseError | None = None
        try:
            for node in busy:
                if node.out:
                    data = b"".join(node.out)
                    node.out.clear()
                    node.conn.send_packed_command((data,), check_health=False)
            for node in busy:
                error = node.read_replies()
                if error is not None:  # the other replies were read all the same
                    refused = refused or ResponseError(str(error))
        except (RedisError, OSError) as exc:
            self._down(exc)
            return False
        if refused is not None:
            self._down(refused)
            return False
        self.backoff.reset()
        return True

    def query(self, calls: list[tuple[int, tuple[str | bytes, ...]]]) -> list[object]:
        """Commands (slot, args) and their replies, pipelined per node, outside the queue.

        Raises RedisError or OSError (the caller marks Redis down with `fail`).
        """
        # Replies of pushed commands come first on the connections: read them before. (The
        # loop never queries between a push and its send; this keeps the replies in step.)
        if self.pending and not self.send():
            raise RedisConnectionError(self.last_error)
        by_node: dict[int, list[int]] = {}
        nodes = {}
        for i, (slot, _) in enumerate(calls):
            node = self._node(slot)
            nodes[id(node)] = node
            by_node.setdefault(id(node), []).append(i)
        replies: list[object] = [None] * len(calls)
        for key, idx in by_node.items():
            conn = nodes[key].conn
            conn.send_packed_command(conn.pack_commands([calls[i][1] for i in idx]), False)
        for key, idx in by_node.items():
            conn = nodes[key].conn
            for i in idx:
                replies[i] = conn.read_response()
        return replies

    def fail(self, exc: BaseException) -> None:
        """Mark Redis down after a failed query()."""
        self._down(exc)

    def discard(self) -> None:
        """Forget the queued commands."""
        for node in self.nodes:
            node.out.clear()
            node.pending = 0
        self.pending = 0

    def due(self, now: float) -> bool:
        """True when Redis is down and the backoff allows another attempt."""
        return not self.up and now >= self.retry_at

    def connect(self) -> bool:
        """One (re)connect attempt: PING, then the cluster's masters if it is one."""
        self._disconnect()
        try:
            if self.seed is None:
                self.seed = self.client.connection_pool.get_connection()
            else:
                self.seed.connect()
            self.seed.send_command("PING", check_health=False)
            self.seed.read_response()
            masters = self._cluster_masters()
            if masters is None:
                self.cluster = False
                self.nodes = [_Node(self.seed, self.url)]
                self.route = self.nodes[:]
            else:
                self._connect_cluster(masters)
        except (RedisError, OSError) as exc:
            self._down(exc)
            return False
        self.up = True
        self.ever_up = True
        return True

    def _cluster_masters(self) -> list[tuple[int, int, str, int]] | None:
        """[(first slot, last slot, host, port)] of a cluster; None for a single Redis."""
        seed = self.seed
        seed.send_command("INFO", "cluster", check_health=False)
        info = seed.read_response()
        text = info.decode() if isinstance(info, bytes) else str(info)
        if "cluster_enabled:1" not in text:
            return None
        seed.send_command("CLUSTER", "SLOTS", check_health=False)
        ranges = []
        for row in seed.read_response():
            host = row[2][0].decode() if isinstance(row[2][0], bytes) else row[2][0]
            ranges.append((int(row[0]), int(row[1]), host or seed.host, int(row[2][1])))
        if not ranges:
            raise ResponseError("the cluster has no slots assigned yet")
        return ranges

    def _connect_cluster(self, masters: list[tuple[int, int, str, int]]) -> None:
        by_addr: dict[tuple[str, int], _Node] = {}
        route: list[_Node | None] = [None] * SLOTS
        for first, last, host, port in masters:
            node = by_addr.get((host, port))
            if node is None:
                conn = make_client(node_url(self.url, host, port), self.password)
                conn = conn.connection_pool.get_connection()
                node = by_addr[(host, port)] = _Node(conn, f"{host}:{port}")
            route[first : last + 1] = [node] * (last - first + 1)
        if any(n is None for n in route):
            raise ResponseError("the cluster does not cover every slot")
        self.cluster = True
        self.nodes = list(by_addr.values())
        self.route = route  # type: ignore[assignment]

    def _disconnect(self) -> None:
        for node in self.nodes:
            if node.conn is not self.seed:
                node.conn.disconnect()
        self.nodes = []
        self.route = []
        if self.seed is not None:
            self.seed.disconnect()

    def _down(self, exc: BaseException) -> None:
        was_up = self.up
        self.up = False
        self.broken = None
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.discard()
        # After a timeout or an error reply, replies may still be in flight on them.
        self._disconnect()
        self.retry_at = time.monotonic() + self.backoff.next()
        if was_up:
            log.warning("redis unreachable, publishing paused: %s", self.last_error)
        else:
            log.debug("redis still unreachable: %s", self.last_error)

    def close(self) -> None:
        self.discard()
        self._disconnect()
        self.client.close()
