"""The dashboard in a real headless Chromium: it loads cleanly, shows the ring's book, updates,
follows an ingest restart and says "disconnected" when the supervisor stops.

Screenshots of each stage are saved in the test's tmp directory.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from browser import Chromium, Page
from conftest import RedisServer
from test_supervisor import Running, poll

from mdpipe.readers import attach

RING = "books.sim.0"

# Test instrumentation: every text the page's book badge takes, in order.
WATCH_STATES = """
window.__bookStates = [];
new MutationObserver(() => window.__bookStates.push(document.getElementById("book-state").textContent))
  .observe(document.getElementById("book-state"), {childList: true, characterData: true, subtree: true});
"""

SHOWN = """({
  conn: document.getElementById("conn").textContent,
  state: document.getElementById("book-state").textContent,
  market: document.getElementById("market").value,
  bid: document.getElementById("best-bid").textContent,
  ask: document.getElementById("best-ask").textContent,
  uid: document.getElementById("book-uid").textContent,
  frames: Number(document.body.dataset.frames || 0),
  ladder: document.querySelectorAll("#ladder tbody tr").length,
  tape: document.querySelectorAll("#tape tbody tr").length,
  liveBadges: [...document.querySelectorAll(".badge.ok")].map((e) => e.id || e.textContent),
  okCells: document.querySelectorAll("td.ok").length,
  upCells: [...document.querySelectorAll("#processes td, #publisher td, #rings td")]
    .filter((td) => td.textContent === "up").length,
  banner: document.getElementById("banner").hidden ? "" : document.getElementById("banner").textContent,
})"""


def shown(page: Page) -> dict:
    return page.evaluate(SHOWN)


def check_book_against_ring(page: Page, instance: str, symbol: str) -> dict:
    """Wait until the page shows the ring's current book of `symbol`, and compare the two.

    The page and the ring move on independently, so the comparison is made when the update
    id on the page is the ring's newest for the symbol, read just before and after top().
    """
    with attach(instance, RING, kind="book") as reader:

        def same_moment() -> dict | None:
            page_now = shown(page)
            live = page_now["state"] == "live" and page_now["uid"]
            if not live or page_now["market"] != f"{RING}|{symbol}":
                return None
            before = int(reader.latest(symbol)["last_update_id"])
            top = reader.top(symbol)
            after = int(reader.latest(symbol)["last_update_id"])
            if not (before == after == int(page_now["uid"])) or top is None:
                return None
            assert float(page_now["bid"]) == top[0], (page_now, top)
            assert float(page_now["ask"]) == top[2], (page_now, top)
            return page_now

        return poll(same_moment, 60, f"the page to show the ring's newest {symbol} book", 0.02)


def test_dashboard_in_chromium(instance: str, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    run = Running(instance, server.url, tmp_path)
    browser = None
    try:
        run.start().wait_ready()
        browser = Chromium(tmp_path)
        page = browser.new_page()
        page.navigate(f"{run.url}/dashboard")

        # Loads, connects, shows the first market's book, matching the ring.
        poll(lambda: shown(page)["conn"] == "live", 30, "the page to connect")
        first = check_book_against_ring(page, instance, "BTCUSDT")
        assert first["ladder"] == 10
        poll(lambda: shown(page)["tape"] > 0, 30, "trades on the tape")
        page.screenshot(tmp_path / "dashboard-live.png")

        # It updates: new frames and a new book.
        poll(
            lambda: (
                shown(page)["frames"] >= first["frames"] + 10 and shown(page)["uid"] != first["uid"]
            ),
            30,
            "the page to update",
        )

        # Another market, chosen on the page.
        page.evaluate(
            f"""(() => {{ const s = document.getElementById("market");
            s.value = "{RING}|ETHUSDT"; s.dispatchEvent(new Event("change")); }})()"""
        )
        check_book_against_ring(page, instance, "ETHUSDT")
        assert "symbol=ETHUSDT" in page.evaluate("location.search")
        assert page.console_errors() == []

        # An ingest restart: the book leaves "live" while the writer is gone, then returns.
        page.evaluate(WATCH_STATES)
        ingest = run.pids()["ingest.sim.0"]
        os.kill(ingest, signal.SIGKILL)
        poll(
            lambda: run.pids().get("ingest.sim.0") not in (None, ingest),
            60,
            "the supervisor to restart ingest",
        )
        check_book_against_ring(page, instance, "ETHUSDT")
        states = page.evaluate("window.__bookStates")
        down = next((i for i, s in enumerate(states) if s != "live"), None)
        assert down is not None, f"the restart never showed: {states}"
        assert "live" in states[down:], f"the book never came back: {states}"
        assert page.console_errors() == []
        page.screenshot(tmp_path / "dashboard-ingest-restarted.png")

        # A supervisor stop: "disconnected", and nothing from before shown as live.
        res = run.stop()
        assert res.returncode == 0, res.stderr
        poll(lambda: shown(page)["conn"] == "disconnected", 30, "the page to see the stop")
        after = shown(page)
        assert "disconnected" in after["banner"]
        assert after["state"] == "disconnected"
        assert after["bid"] == after["ask"] == after["uid"] == ""
        assert after["ladder"] == 0 and after["tape"] == 0
        assert after["liveBadges"] == [] and after["okCells"] == after["upCells"] == 0
        page.screenshot(tmp_path / "dashboard-disconnected.png")
    finally:
        if browser is not None:
            browser.close()
        run.stop()
        run.kill()
        server.stop()
