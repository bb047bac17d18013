"""Server-side counters reported by GET /_sim/stats."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServerStats:
    """Connection and REST counters (the hub counts messages, the injector faults)."""

    connections_opened: int = 0
    closed: Counter[str] = field(default_factory=Counter)  # why connections ended
    rest_by_status: Counter[str] = field(default_factory=Counter)
    rest_by_path: Counter[str] = field(default_factory=Counter)
    control_requests: int = 0

    def to_dict(self, current_connections: int) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "connections": {
                "current": current_connections,
                "opened": self.connections_opened,
                "closed": dict(self.closed),
            },
            "rest": {
                "total": sum(self.rest_by_status.values()),
                "by_status": dict(self.rest_by_status),
                "by_path": dict(self.rest_by_path),
            },
            "control_requests": self.control_requests,
        }
