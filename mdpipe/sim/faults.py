"""Fault descriptions, the command-line fault schedule, and active REST fault windows."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

KINDS = (
    "disconnect",
    "gap",
    "malformed",
    "silence",
    "shutdown",
    "restart",  # venues with in-band books (bybit): the topic restarts at u=1 with a snapshot
    "snapshot",  # venues with in-band books: a snapshot pushed in the middle of the stream
    "rest_451",
    "rest_429",
    "rest_418",
    "rest_500",
    "rest_slow",
)
REST_KINDS = frozenset(k for k in KINDS if k.startswith("rest_"))
DISCONNECT_VARIANTS = ("abrupt", "close")
MALFORMED_VARIANTS = (
    "truncated",
    "nan_price",
    "negative_price",
    "missing_field",
    "wrong_type",
    "unknown_stream",
    "oversized",
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class FaultError(ValueError):
    """A fault description that cannot be applied; the message says which field is wrong."""


def parse_duration(text: str) -> float:
    """Seconds in '500ms', '10s', '3m', '24h', '1d' or a bare number of seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise FaultError(f"not a duration: {text!r} (use e.g. 500ms, 10s, 3m, 24h)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


@dataclass
class Fault:
    """One fault to inject now; unset fields take the kind's defaults."""

    kind: str
    symbol: str | None = None
    count: int | None = None
    seconds: float | None = None
    variant: str | None = None
    delay: float | None = None  # rest_slow: how long each answer is held back
    retry_after: int | None = None  # rest_429/rest_418: Retry-After header, seconds

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Fault:
        """Validate a JSON body or command-line spec into a Fault."""
        if not isinstance(data, dict):
            raise FaultError("fault must be a JSON object")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise FaultError(f"unknown field(s): {', '.join(sorted(unknown))}")
        kind = data.get("kind")
        if kind not in KINDS:
            raise FaultError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        fault = cls(kind=kind)
        if data.get("symbol") is not None:
            if not isinstance(data["symbol"], str) or not data["symbol"]:
                raise FaultError("symbol must be a non-empty string")
            fault.symbol = data["symbol"].upper()
        for name in ("count", "retry_after"):
            value = data.get(name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise FaultError(f"{name} must be a positive integer")
                setattr(fault, name, value)
        for name in ("seconds", "delay"):
            value = data.get(name)
            if value is not None:
                if isinstance(value, str):
                    value = parse_duration(value)
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise FaultError(f"{name} must be a non-negative number of seconds")
                if not math.isfinite(value):
                    raise FaultError(f"{name} must be finite")
                setattr(fault, name, float(value))
        variant = data.get("variant")
        if variant is not None:
            allowed = {"disconnect": DISCONNECT_VARIANTS, "malformed": MALFORMED_VARIANTS}.get(kind)
            if allowed is None or variant not in allowed:
                raise FaultError(f"variant {variant!r} is not valid for {kind}")
            fault.variant = variant
        return fault

    def to_dict(self) -> dict[str, Any]:
        """The fault's set fields, for logs and stats."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ScheduledFault:
    """A command-line fault: first at `at` seconds of market time, then every `every`."""

    fault: Fault
    at: float
    every: float | None


def parse_fault_spec(spec: str) -> ScheduledFault:
    """Parse `KIND[:key=value,...]`, e.g. `gap:every=10s,symbol=BTCUSDT` or `rest_429:at=5s`."""
    kind, _, rest = spec.partition(":")
    fields: dict[str, Any] = {"kind": kind.strip()}
    timing: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise FaultError(f"{spec!r}: expected key=value, got {part!r}")
        value = value.strip()
        if key in ("every", "at"):
            timing[key] = parse_duration(value)
        elif key in ("count", "retry_after"):
            if not value.isdigit():
                raise FaultError(f"{spec!r}: {key} must be a positive integer")
            fields[key] = int(value)
        elif key in ("seconds", "delay"):
            fields[key] = parse_duration(value)
        else:
            fields[key] = value
    try:
        fault = Fault.from_mapping(fields)
    except FaultError as exc:
        raise FaultError(f"{spec!r}: {exc}") from None
    every = timing.get("every")
    if every is not None and every <= 0:
        raise FaultError(f"{spec!r}: every must be positive")
    at = timing.get("at", every if every is not None else 0.0)
    return ScheduledFault(fault, at, every)


class FaultSchedule:
    """Command-line faults in market-time order.

    Market time is the simulated exchange's own clock (messages produced / rate, or tape
    time), so a schedule hits the same events on every run with the same seed.
    """

    def __init__(self, items: list[ScheduledFault]) -> None:
        self._items = [(s.at, i, s) for i, s in enumerate(items)]
        self.next_due = min((at for at, _, _ in self._items), default=math.inf)

    def pop_due(self, market_time: float) -> list[Fault]:
        """Faults due at `market_time`, rescheduling the periodic ones."""
        due: list[Fault] = []
        kept = []
        for at, i, item in self._items:
            if at <= market_time:
                due.append(item.fault)
                if item.every is not None:
                    kept.append((at + item.every, i, item))
            else:
                kept.append((at, i, item))
        kept.sort(key=lambda x: (x[0], x[1]))
        self._items = kept
        self.next_due = kept[0][0] if kept else math.inf
        return due

    def rebase(self, market_time: float) -> None:
        """Restart the schedule's clock (a looping tape starts over at market time 0)."""
        self._items = [(at - market_time, i, s) for at, i, s in self._items]
        self.next_due = min((at for at, _, _ in self._items), default=math.inf)


class RestFaultWindows:
    """REST faults in force: each for its next `count` requests and/or `seconds` of wall time."""

    def __init__(self) -> None:
        self._active: list[list[Any]] = []  # [fault, remaining count or None, deadline or None]

    def add(self, fault: Fault, now: float) -> None:
        """Start a window; with neither count nor seconds it covers the next request."""
        count = fault.count if fault.count is not None or fault.seconds is not None else 1
        deadline = now + fault.seconds if fault.seconds is not None else None
        self._active.append([fault, count, deadline])

    def take(self, now: float) -> Fault | None:
        """The fault the next REST request gets, consuming one unit of its window."""
        self._active = [w for w in self._active if w[2] is None or w[2] > now]
        for window in self._active:
            fault, count, _ = window
            if count is not None:
                window[1] = count - 1
                if window[1] <= 0:
                    self._active.remove(window)
            return fault
        return None

    def active(self) -> int:
        """Windows still in force (for stats)."""
        return len(self._active)
