"""Consuming mdpipe from Redis on another machine: pub/sub with exact gaps, or resumable Streams.

    from mdpipe.redis_consumer import Subscriber, StreamReader, ConsumerError

    with Subscriber("redis://md-host:6379/0", ["BTCUSDT", "bybit-linear:ETHUSDT"]) as sub:
        for ev in sub:            # "book", "trade", "gap", "reset", "reconnected", ...
            ...

Symbols are resolved through the directory the publisher keeps in Redis (mdpipe.redis_names),
so channel names, venue segments and cluster hash tags never have to be configured here. Needs
only redis-py and orjson.
"""

from mdpipe.redis_consumer.connect import ConsumerError, connect, directory, resolve
from mdpipe.redis_consumer.streams import Position, StreamEvent, StreamReader
from mdpipe.redis_consumer.subscriber import BookSequence, Event, Subscriber

__all__ = [
    "BookSequence",
    "ConsumerError",
    "Event",
    "Position",
    "StreamEvent",
    "StreamReader",
    "Subscriber",
    "connect",
    "directory",
    "resolve",
]
