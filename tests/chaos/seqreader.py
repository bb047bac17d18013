"""A strategy-like reader process that proves it loses nothing silently.

    python tests/chaos/seqreader.py INSTANCE SECONDS

Reads the books rings and checks each symbol's record numbers (`symbol_seq`): they go up by
one, or start again at 1 with a new writer; any other jump is records skipped. Prints a
JSON line about every 0.1 s: {"n", "lost", "skipped", "generation", "restarts", "pid"}. A
correct reader always reports skipped == lost (both 0 unless it was lapped).
"""

from __future__ import annotations

import json
import os
import sys
import time

from mdpipe.readers import attach


def main(instance: str, seconds: float) -> int:
    """Read until `seconds` have passed, reporting as it goes."""
    r = attach(instance, "books", kind="book", wait=True, timeout=30)
    last: dict[int, int] = {}
    n = skipped = 0
    end = time.monotonic() + seconds
    next_report = 0.0
    while True:
        now = time.monotonic()
        if now >= next_report or now >= end:
            next_report = now + 0.1
            report = {"n": n, "lost": r.lost, "skipped": skipped, "generation": r.generation}
            report |= {"restarts": r.restarts, "pid": os.getpid()}
            print(json.dumps(report), flush=True)
            if now >= end:
                return 0
        rec = r.poll()
        if rec is None:
            time.sleep(0.0005)
            continue
        sid, seq = int(rec["symbol_id"]), int(rec["symbol_seq"])
        prev = last.get(sid)
        if prev is not None and seq != prev + 1 and seq != 1:
            # A jump ahead skipped seq-prev-1; a number at or below the last one is a new
            # writer whose first seq-1 records were skipped.
            skipped += seq - prev - 1 if seq > prev else seq - 1
        last[sid] = seq
        n += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
