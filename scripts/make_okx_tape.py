"""Regenerate the synthetic OKX tape in data/tapes (no OKX recording exists in this repository).

    .venv/bin/python scripts/make_okx_tape.py [--seconds 40] [--out data/tapes/okx_swap_legacy_synthetic.gz]

The simulator's seeded market, pushed in the form OKX data recorded before 2026 has: books
with non-zero checksums and some updates without seqId, bbo-tbt, trades, and a snapshot
every 10 s. The same arguments always give the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mdpipe.sim.venues._okx.record import synthetic_tape, write_tape

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data/tapes/okx_swap_legacy_synthetic.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--symbols", default="BTC-USDT-SWAP,ETH-USDT-SWAP")
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--rate", type=float, default=150.0, help="engine steps per second")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    lines = synthetic_tape(args.symbols.split(","), args.seconds, args.rate, args.seed)
    write_tape(args.out, lines)
    print(f"{args.out}: {len(lines)} lines, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
