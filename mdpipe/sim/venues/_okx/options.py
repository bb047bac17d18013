"""The `--okx-*` options of `mdpipe sim` (only read with `--venue okx`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

_OPTIONS = [
    click.option(
        "--okx-books-ms",
        type=click.IntRange(min=0),
        default=100,
        show_default=True,
        help="OKX: `books` push interval in ms (0: one update per engine step).",
    ),
    click.option(
        "--okx-legacy",
        is_flag=True,
        help="OKX: data as recorded before 2026: non-zero checksums, some updates without seqId.",
    ),
    click.option(
        "--okx-no-snapshot",
        is_flag=True,
        help="OKX: subscribing to `books` sends no in-band snapshot (start from REST).",
    ),
    click.option(
        "--okx-keepalive",
        type=click.FloatRange(min=0),
        default=60.0,
        show_default=True,
        help="OKX: seconds without a change before a `books` keep-alive push (0: never).",
    ),
    click.option(
        "--okx-idle-close",
        type=click.FloatRange(min=0, min_open=True),
        default=30.0,
        show_default=True,
        help="OKX: close a connection (4004) after this many seconds without a message or push.",
    ),
    click.option(
        "--okx-max-ops",
        type=click.IntRange(min=1),
        default=480,
        show_default=True,
        help="OKX: subscribe/unsubscribe ops allowed per connection-hour.",
    ),
    click.option(
        "--okx-connect-rate",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        help="OKX: new connections accepted per second (more get HTTP 429).",
    ),
]


def okx_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the OKX options to a click command."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def okx_settings(values: dict[str, Any]) -> dict[str, Any]:
    """OkxSimConfig keyword arguments from the `--okx-*` option values (defaults if absent)."""
    get = values.get
    return {
        "books_ms": get("okx_books_ms", 100),
        "legacy": bool(get("okx_legacy", False)),
        "in_band_snapshot": not get("okx_no_snapshot", False),
        "keepalive_s": get("okx_keepalive", 60.0),
        "idle_close_s": get("okx_idle_close", 30.0),
        "max_ops_per_hour": get("okx_max_ops", 480),
        "connect_rate": get("okx_connect_rate", 3),
    }
