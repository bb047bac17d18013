"""Counters are declared once: writers, /metrics help texts and the README follow the declaration."""

from __future__ import annotations

from pathlib import Path

from mdpipe import counters
from mdpipe.ingest.counters import COUNTERS as INGEST_COUNTERS
from mdpipe.publisher.status import COUNTERS as PUBLISHER_COUNTERS

REPO = Path(__file__).resolve().parent.parent


def test_writers_register_exactly_the_declared_counters() -> None:
    assert counters.INGEST.names == INGEST_COUNTERS
    assert counters.PUBLISHER.names == PUBLISHER_COUNTERS
    for cs in counters.ALL:
        assert len(set(cs.names)) == len(cs.names), cs.component
        for c in cs.counters:
            assert c.help and len(c.name) < 32, c


def test_readme_metrics_table_is_the_generated_one() -> None:
    text = (REPO / "README.md").read_text()
    begin, end = "<!-- counters:begin -->\n", "<!-- counters:end -->"
    table = text[text.index(begin) + len(begin) : text.index(end)]
    assert table == counters.markdown_table(), "regenerate with: python -m mdpipe.counters"


def test_metric_names_follow_one_rule() -> None:
    assert counters.metric_name("ingest", "frames") == ("counter", "mdpipe_ingest_frames", 1.0)
    assert counters.metric_name("ingest", "g_books_total") == ("gauge", "mdpipe_ingest_books", 1.0)
    assert counters.metric_name("publisher", "g_lag_ns") == (
        "gauge",
        "mdpipe_publisher_lag_seconds",
        1e-9,
    )
    assert counters.SUPERVISOR.describe("restarts.2") == "restarts of one child (child index 2)"
