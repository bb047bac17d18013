"""Binance's connection and REST limits, and the plan that stays within them (no I/O).

A connection carries at most 1024 streams. Its URL carries only as many as fit
URL_BUDGET characters (servers answer 414 to a longer request line); the rest go in
SUBSCRIBE messages right after the handshake, each at most SUBSCRIBE_MAX_PARAMS streams
and SUBSCRIBE_MAX_BYTES bytes, sent at most SEND_RATE per second (the exchange closes a
connection that sends more than 10 messages a second on futures, 5 on spot).

REST weight: 2,400 a minute per IP on USD-M futures (6,000 on spot), read back from the
`X-MBX-USED-WEIGHT-1M` header of every reply; a depth snapshot costs `depth_weight`.
"""

from __future__ import annotations

import orjson

from mdpipe.venues.pacing import WeightBudget

MAX_STREAMS = 1024  # per connection
URL_BUDGET = 2048  # characters of a planned URL (the simulator refuses more than 4096)
SUBSCRIBE_MAX_PARAMS = 200  # streams per SUBSCRIBE message
SUBSCRIBE_MAX_BYTES = 8192  # bytes of one client message
INCOMING_RATE = {"futures": 10, "spot": 5}  # client messages per second the exchange allows
SEND_RATE = {"futures": 5, "spot": 3}  # what we send: half, leaving room for pongs
WEIGHT_LIMIT = {"futures": 2400, "spot": 6000}  # request weight per minute per IP
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


def depth_weight(market: str, limit: int) -> int:
    """Request weight of one depth snapshot, as the exchange counts it."""
    if market == "futures":
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def weight_budget(market: str, snapshot_limit: int) -> WeightBudget:
    """The REST pacing of one ingest process: snapshots within 90% of the IP's minute."""
    return WeightBudget(WEIGHT_LIMIT[market], depth_weight(market, snapshot_limit))


def request_frames(method: str, streams: list[str], first_id: int = 1) -> tuple[bytes, ...]:
    """SUBSCRIBE / UNSUBSCRIBE messages for `streams`, each within the per-message limits."""
    frames: list[bytes] = []
    batch: list[str] = []

    def frame(params: list[str]) -> bytes:
        return orjson.dumps({"method": method, "params": params, "id": first_id + len(frames)})

    for stream in streams:
        if batch and (
            len(batch) >= SUBSCRIBE_MAX_PARAMS or len(frame([*batch, stream])) > SUBSCRIBE_MAX_BYTES
        ):
            frames.append(frame(batch))
            batch = []
        batch.append(stream)
    if batch:
        frames.append(frame(batch))
    return tuple(frames)


def split_url(endpoint: str, streams: list[str]) -> tuple[str, list[str]]:
    """(the URL carrying as many streams as fit URL_BUDGET, the streams left to SUBSCRIBE).

    A URL carries at least one stream: a combined-stream URL without one is refused.
    """
    url = f"{endpoint}?streams={streams[0]}"
    n = 1
    while n < len(streams) and len(url) + 1 + len(streams[n]) <= URL_BUDGET:
        url += "/" + streams[n]
        n += 1
    return url, streams[n:]
