"""100,000 mutated real exchange messages through the feed parser: no crash, every bad one
refused with a FeedError kind, nothing insane accepted, every good one still parsed."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

from mdpipe.venues.binance.wire import BinanceParser, BookTicker, DepthDiff, FeedError, Trade
from mdpipe.venues.tapes import is_snapshot, read_tape

from .mutate import mutate

MESSAGES = 100_000


def _sane(event: object) -> bool:
    """Whatever the parser accepts must be usable as is: finite, positive prices."""
    if isinstance(event, DepthDiff):
        levels = event.bid_prices + event.ask_prices
        qtys = event.bid_qtys + event.ask_qtys
        return (
            all(math.isfinite(p) and p > 0 for p in levels)
            and all(math.isfinite(q) and q >= 0 for q in qtys)
            and event.first_id <= event.last_id
        )
    if isinstance(event, Trade):
        return math.isfinite(event.price) and event.price > 0 and math.isfinite(event.qty)
    if isinstance(event, BookTicker):
        return all(math.isfinite(v) for v in (event.bid_price, event.ask_price))
    return True


def _corpus(path: Path, limit: int = 3000) -> list[bytes]:
    out = []
    for _, raw in read_tape(path):
        if not is_snapshot(raw):
            out.append(raw)
        if len(out) == limit:
            break
    return out


def test_fuzz_parser_never_crashes_and_counts_every_bad_message(tapes: Path) -> None:
    rng = random.Random(20240808)
    corpora = {
        "futures": _corpus(tapes / "usdm_btcusdt_20240808.gz"),
        "spot": _corpus(tapes / "spot_btcusdt_20240808.gz"),
    }
    parsers = {m: BinanceParser(m) for m in corpora}
    kinds: Counter[str] = Counter()
    by_mutation: Counter[str] = Counter()
    accepted = good = 0
    for i in range(MESSAGES):
        market = "futures" if i % 2 else "spot"
        original = rng.choice(corpora[market])
        parser = parsers[market]
        if i % 10 == 0:  # controls: good messages interleaved with the bad still parse
            parser.parse(original)
            good += 1
            continue
        name, raw = mutate(rng, original)
        by_mutation[name] += 1
        try:
            event = parser.parse(raw)
        except FeedError as exc:
            kinds[exc.kind] += 1
            continue
        accepted += 1
        assert _sane(event), (name, raw[:300], event)
    refused = sum(kinds.values())
    print(
        f"\n{MESSAGES} messages: {good} good controls, {refused} refused {dict(kinds)}, "
        f"{accepted} mutated but still valid; mutations {dict(by_mutation)}"
    )
    assert good == MESSAGES // 10
    assert refused + accepted + good == MESSAGES
    # Most mutations break a message; some (a byte flip inside a digit) leave a valid one.
    assert refused > 0.6 * (MESSAGES - good)
