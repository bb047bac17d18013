"""The one exception a feed parser raises, and its kinds (counted and dead-lettered per kind)."""

from __future__ import annotations

MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
BAD_NUMBER = "bad_number"
UNKNOWN_EVENT = "unknown_event"
UNKNOWN_STREAM = "unknown_stream"
ERROR_KINDS = (MALFORMED_JSON, MISSING_FIELD, BAD_TYPE, BAD_NUMBER, UNKNOWN_EVENT, UNKNOWN_STREAM)

# What a ring record can hold: a venue time in milliseconds becomes int64 nanoseconds, and ids
# are stored in 64 bits (kept below 2**63 so they read the same signed or not). A value past
# these is a bad number, refused by the parser before anything is written.
MAX_MS = (1 << 63) // 1_000_000
MAX_ID = 1 << 63


class FeedError(ValueError):
    """A message that cannot be trusted; `kind` is one of ERROR_KINDS, `detail` says why."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
