"""A publisher reading more rings than one header page had counters for: every ring keeps
its cursor, and a restarted publisher resumes each where the last one stopped."""

from __future__ import annotations

from test_publisher import counters, make_cfg, publisher, put_trade, trade_writer, wait_for

from mdpipe.publisher.status import CURSOR, ring_key
from mdpipe.shm import layout as L

RINGS = 40  # 19 publisher counters + 2 per ring: 99 counters, more than layout v3's 64


def test_every_ring_of_many_keeps_its_cursor_across_a_restart(redis_server, instance):
    names = [f"trades.f{i}.0" for i in range(RINGS)]
    writers = [trade_writer(instance, name, capacity=8) for name in names]
    keys = [CURSOR + ring_key(name) for name in names]
    cfg = make_cfg(instance, redis_server.url)
    try:
        with publisher(cfg, rings=RINGS):
            for w in writers:
                put_trade(w, 0, 1)
            wait_for(lambda: all(counters(instance).get(k) == 1 for k in keys), what="cursors")
        first = counters(instance)
        assert first["trades_published"] == RINGS
        assert 64 < len(first) <= L.MAX_COUNTERS

        for w in writers:  # committed while no publisher runs
            put_trade(w, 0, 2)
        with publisher(cfg, rings=RINGS):
            wait_for(lambda: all(counters(instance).get(k) == 2 for k in keys), what="cursors")
        # Resumed at each ring's cursor: the trade of the outage went out, nothing twice
        # (the totals carry on from the predecessor's).
        assert counters(instance)["trades_published"] == 2 * RINGS
    finally:
        for w in writers:
            w.close(unlink=True)
