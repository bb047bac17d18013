"""The chaos suite: every test adds what it did to one table, printed at the end of the run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

ROWS: list[tuple[str, str, str, str]] = []

Report = Callable[[str, str, "float | None", str], None]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """report(fault, what the system did, recovery seconds or None, what was lost)."""

    def add(fault: str, outcome: str, recovery: float | None, lost: str) -> None:
        took = "-" if recovery is None else f"{recovery:.2f} s"
        # Rows ride the test's report, so they reach the table from pytest-xdist workers too.
        request.node.user_properties.append(("chaos", (fault, outcome, took, lost)))

    return add


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        ROWS.extend(tuple(row) for key, row in report.user_properties if key == "chaos")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    headers = ("fault", "what the system did", "recovery", "lost")
    widths = [max(len(h), *(len(r[i]) for r in ROWS)) for i, h in enumerate(headers)]
    terminalreporter.section("chaos: faults, recovery and loss")
    for row in (headers, tuple("-" * w for w in widths), *ROWS):
        terminalreporter.write_line(
            "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        )
