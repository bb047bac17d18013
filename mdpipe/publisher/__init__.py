"""The publisher: tails every books and trades ring of an instance into Redis.

    python -m mdpipe.publisher --config FILE [--set key=value ...] [--instance NAME]

Modules: loop (the publishing loop), payloads (the JSON and what is kept per symbol), sink
(pipelined Redis connections, single or cluster), rolling (24 h figures), status (counters
and ring cursors), cli (the process). Each ring is read through mdpipe.tailer.RingTailer
(saved cursor, exact loss counting, rewind). Names of channels, keys and streams:
mdpipe.redis_names; a consumer of them: mdpipe.redis_consumer.

Every book record goes out on orderbook:{SYMBOL}, every trade on trades:{SYMBOL}, a ticker with
rolling 24 h figures on market_data:{SYMBOL} (at most every MARKET_DATA_INTERVAL per symbol).
Keys of the same names hold the newest book, trade and ticker, with the redis.key_ttl TTL. The
orderbook key is SET to a symbol's newest book of each chunk of a round trip (up to
payloads.BOOK_CHUNK books, sent while the next is encoded) before that chunk PUBLISHes any of
its books, so it is never behind the channel: a subscriber that subscribes, then GETs the key,
then follows the channel sees every book after the key's (no false gap).
The trades and market_data keys are set at most every KEY_INTERVAL per symbol. Keys are
refreshed while their ring's writer lives and expire after it. With publisher.streams, every
trade is also XADDed to trades_stream:{SYMBOL} and each symbol's newest book at most every
publisher.stream_book_interval to orderbook_stream:{SYMBOL}, each entry numbered (field n) so
a consumer resuming after the MAXLEN bound knows exactly how many entries it missed.

Falling behind (a full batch with more waiting), books are conflated per symbol to the
newest of the batch (counted); trades never are. A Redis outage or stall is survived: books
are still consumed and each symbol's newest is kept (the rest counted as dropped); trades
stay in their rings and reach Redis late, in order, once it is back: a round trip Redis did
not confirm is read again from the ring (so a trade may arrive twice, never not at all). Only
an outage longer than the trades ring's span loses trades, counted exactly (trades_lost) as
when any reader is lapped. Counters live in the `publisher` status segment (see COUNTERS),
with each ring's read position (g_cursor_<ring>): a publisher restarted after a crash resumes
there and continues the totals, so a crash loses nothing.
"""

from mdpipe.publisher.loop import MARKET_DATA_INTERVAL, Publisher, run_publisher
from mdpipe.publisher.status import COUNTERS

__all__ = ["COUNTERS", "MARKET_DATA_INTERVAL", "Publisher", "run_publisher"]
