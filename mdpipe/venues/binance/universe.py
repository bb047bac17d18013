"""Every USD-M perpetual the exchange lists, as a config's `symbols`: the whole market.

    python -m mdpipe.venues.binance.universe [--rest-url https://fapi.binance.com]
        [--config config/usdm-all.toml]

Reads GET /fapi/v1/exchangeInfo (weight 1) and keeps the symbols whose contractType is
PERPETUAL and whose status is TRADING. Without --config it prints the TOML line; with it,
it rewrites that file's `symbols = [...]` line of its first [[feeds]] table in place.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

EXCHANGE_INFO = "/fapi/v1/exchangeInfo"
_FEED_SYMBOLS = re.compile(r"^(\[\[feeds\]\][^\[]*?^symbols = )\[.*?\]$", re.M | re.S)


def perpetuals(info: dict[str, Any]) -> list[str]:
    """The trading USD-M perpetuals of an exchangeInfo reply, sorted."""
    return sorted(
        s["symbol"]
        for s in info.get("symbols", [])
        if s.get("contractType") == "PERPETUAL" and s.get("status") == "TRADING"
    )


def toml_list(symbols: list[str], per_line: int = 8) -> str:
    """A TOML array of symbols, a few per line."""
    rows = [
        ", ".join(f'"{s}"' for s in symbols[i : i + per_line])
        for i in range(0, len(symbols), per_line)
    ]
    return "[\n" + "".join(f"  {row},\n" for row in rows) + "]"


def main(argv: list[str] | None = None) -> int:
    """Fetch, filter, print or rewrite; exit 1 with one line when the exchange cannot say."""
    p = argparse.ArgumentParser(prog="python -m mdpipe.venues.binance.universe")
    p.add_argument("--rest-url", default="https://fapi.binance.com")
    p.add_argument("--config", type=Path, help="rewrite this config's first feed's symbols")
    args = p.parse_args(argv)
    url = args.rest_url.rstrip("/") + EXCHANGE_INFO
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            info = orjson.loads(resp.read())
    except (OSError, urllib.error.URLError, orjson.JSONDecodeError) as exc:
        print(f"universe: cannot read {url}: {exc}", file=sys.stderr)
        return 1
    symbols = perpetuals(info)
    if not symbols:
        print(f"universe: {url} lists no trading perpetual", file=sys.stderr)
        return 1
    line = toml_list(symbols)
    if args.config is None:
        print(f"symbols = {line}")
        return 0
    text = args.config.read_text()
    new, n = _FEED_SYMBOLS.subn(lambda m: m.group(1) + line, text, count=1)
    if not n:
        print(f"universe: {args.config} has no [[feeds]] symbols line", file=sys.stderr)
        return 1
    args.config.write_text(new)
    print(f"{args.config}: {len(symbols)} perpetuals", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
