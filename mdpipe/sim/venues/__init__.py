"""The simulator's venues: one module each (`binance`, `bybit`, ...), found by name.

A venue module holds `MARKETS` (the markets it imitates, the default first) and
`build(cfg: SimConfig)`, returning a server with a `market` attribute and
`async serve(ready)`, which calls `ready(host, port)` once listening and runs until
SIGINT/SIGTERM. A new venue is a new module: nothing here lists them by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

_HERE = Path(__file__).parent
DEFAULT_VENUE = "binance"


def venue_names() -> tuple[str, ...]:
    """The venues the simulator speaks."""
    return tuple(
        sorted(m.name for m in pkgutil.iter_modules([str(_HERE)]) if not m.name.startswith("_"))
    )


def venue_module(name: str) -> ModuleType:
    """A venue's simulator module; KeyError if there is none."""
    if name not in venue_names():
        raise KeyError(name)
    return importlib.import_module(f"mdpipe.sim.venues.{name}")


def build(cfg: Any) -> Any:
    """The server of `cfg.venue`, ready to `serve`."""
    return venue_module(cfg.venue).build(cfg)
