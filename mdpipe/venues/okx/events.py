"""The events an OKX v5 public frame turns into (free of I/O, built by `OkxParser`)."""

from __future__ import annotations

from dataclasses import dataclass

Floats = list[float]

SNAPSHOT = "snapshot"
UPDATE = "update"


@dataclass(slots=True)
class BookMessage:
    """One `books` push (or a REST books answer): levels with sizes as received.

    `seq_id` / `prev_seq_id` are None when the message carries none (data recorded before
    the field existed); `checksum` 0 means absent (OKX sends 0 since June 2026). Sizes are
    what OKX sends: contracts on SWAP, base currency on SPOT. `bid_text` / `ask_text` hold
    each level's raw `px:sz` strings, aligned with the floats, for the checksum.
    """

    inst_id: str
    action: str  # SNAPSHOT or UPDATE
    ts: int  # book build time, ms
    seq_id: int | None
    prev_seq_id: int | None
    checksum: int
    bid_prices: Floats
    bid_qtys: Floats
    ask_prices: Floats
    ask_qtys: Floats
    bid_text: list[str]
    ask_text: list[str]

    @property
    def is_keepalive(self) -> bool:
        """`seqId == prevSeqId` with both sides empty: nothing changed (sent after ~60 s idle)."""
        return (
            self.seq_id is not None
            and self.seq_id == self.prev_seq_id
            and not self.bid_prices
            and not self.ask_prices
        )


@dataclass(slots=True)
class TopOfBook:
    """The venue's own best levels (`bbo-tbt`, or the first level of `books5`): ground truth."""

    inst_id: str
    channel: str
    ts: int
    seq_id: int | None
    bid_price: float  # 0.0 with qty 0.0 when the side is empty
    bid_qty: float
    ask_price: float
    ask_qty: float


@dataclass(slots=True)
class Trade:
    """One `trades` push item: one taker order at one price; `side` is the taker's side."""

    inst_id: str
    trade_id: int  # the last fill's id; the fills are trade_id - count + 1 .. trade_id
    price: float
    qty: float
    side: str  # "buy" or "sell"
    ts: int
    count: int
    seq_id: int | None

    @property
    def first_trade_id(self) -> int:
        """The id of the first fill this message aggregates."""
        return self.trade_id - self.count + 1


@dataclass(slots=True)
class Trades:
    """A `trades` push: one or more trades of one instrument, in order."""

    inst_id: str
    items: list[Trade]


@dataclass(slots=True)
class Subscribed:
    """The server acknowledged one subscribe (or unsubscribe) argument."""

    op: str  # "subscribe" or "unsubscribe"
    channel: str
    inst_id: str
    request_id: str
    conn_id: str


@dataclass(slots=True)
class ErrorEvent:
    """`{"event":"error"}`: a refused request (the code says why; see protocol.ERROR_CODES)."""

    code: str
    msg: str
    request_id: str
    conn_id: str


@dataclass(slots=True)
class Notice:
    """`{"event":"notice"}`: 64008 announces a service upgrade cut ~60 s ahead."""

    code: str
    msg: str
    conn_id: str


@dataclass(slots=True)
class Pong:
    """The text `pong` answering our text `ping`."""


PONG = Pong()

Event = BookMessage | TopOfBook | Trades | Subscribed | ErrorEvent | Notice | Pong
