"""Reaching the Redis an mdpipe publisher writes to, and resolving symbols to their names there."""

from __future__ import annotations

import time

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from mdpipe.redis_names import DIRECTORY_KEY, SymbolNames

Client = redis.Redis | RedisCluster


class ConsumerError(Exception):
    """Bad input or an unreachable Redis: the message is one line that says which."""


def connect(url: str, password: str | None = None, *, timeout: float = 5.0) -> Client:
    """A client for `url`; a RedisCluster when the node there is part of a cluster."""
    try:
        client = redis.Redis.from_url(
            url,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # a lost connection is the caller's to handle and report
        )
        info = client.info("cluster")
    except ValueError as exc:
        raise ConsumerError(f"bad Redis URL {url!r}: {exc}") from None
    except (redis.RedisError, OSError) as exc:
        raise ConsumerError(f"cannot reach Redis at {url}: {exc}") from None
    if not info.get("cluster_enabled"):
        return client
    client.close()
    try:
        return RedisCluster.from_url(
            url, password=password, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    except (redis.RedisError, OSError) as exc:
        raise ConsumerError(f"cannot reach the Redis Cluster at {url}: {exc}") from None


def directory(client: Client, url: str) -> dict[str, SymbolNames]:
    """Every (venue, symbol) the publisher lists, by "venue:symbol"."""
    try:
        raw = client.hgetall(DIRECTORY_KEY)
    except (redis.RedisError, OSError) as exc:
        raise ConsumerError(f"cannot read {DIRECTORY_KEY} from Redis at {url}: {exc}") from None
    if not raw:
        raise ConsumerError(
            f"Redis at {url} has no {DIRECTORY_KEY}: no mdpipe publisher writes there "
            "(is the instance running, with redis.url pointing here?)"
        )
    return {k.decode(): SymbolNames.from_json(v) for k, v in raw.items()}


def resolve(client: Client, url: str, specs: list[str], wait: float = 0.0) -> list[SymbolNames]:
    """Names of each "SYMBOL" or "venue:SYMBOL" (a bare symbol must be on one venue only).

    wait: seconds to wait for a publisher starting alongside to list the symbols.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            return _resolve(directory(client, url), url, specs)
        except ConsumerError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _resolve(listed: dict[str, SymbolNames], url: str, specs: list[str]) -> list[SymbolNames]:
    by_symbol: dict[str, list[SymbolNames]] = {}
    for names in listed.values():
        by_symbol.setdefault(names.symbol, []).append(names)
    out = []
    for spec in specs:
        if spec in listed:
            out.append(listed[spec])
            continue
        found = by_symbol.get(spec, [])
        if len(found) == 1:
            out.append(found[0])
        elif found:
            venues = ", ".join(sorted(f"{n.venue}:{n.symbol}" for n in found))
            raise ConsumerError(f"symbol {spec} is on several venues: name one of {venues}")
        else:
            known = sorted(listed)
            shown = ", ".join(known[:12]) + (
                f" and {len(known) - 12} more" if len(known) > 12 else ""
            )
            raise ConsumerError(f"unknown symbol {spec!r}: Redis at {url} carries {shown}")
    return out
