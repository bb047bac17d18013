"""Venue protocol packages, one per exchange (`mdpipe.venues.<name>`), and how to find them.

A venue package holds `spec` (config defaults and checks, light to import) and exposes
`make_venue(feed, symbols)` returning a `mdpipe.venues.base.Venue`. A new venue is a new
package with those two: nothing here lists them by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

_HERE = Path(__file__).parent


def venue_names() -> tuple[str, ...]:
    """The venues this build supports: every package here with a `spec` module."""
    return tuple(
        sorted(
            m.name
            for m in pkgutil.iter_modules([str(_HERE)])
            if m.ispkg and (_HERE / m.name / "spec.py").is_file()
        )
    )


def venue_spec(name: str) -> ModuleType:
    """A venue's `spec` module (MARKETS, DEFAULTS, check_symbol, check_feed); KeyError if none."""
    if name not in venue_names():
        raise KeyError(name)
    return importlib.import_module(f"mdpipe.venues.{name}.spec")


def make_venue(feed: Any, symbols: list[str]) -> Any:
    """The `Venue` of one ingest shard of a `[[feeds]]` entry."""
    return importlib.import_module(f"mdpipe.venues.{feed.exchange}").make_venue(feed, symbols)
