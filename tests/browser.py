"""A headless Chromium driven over its DevTools protocol, for the dashboard's browser test.

Debian's `chromium` and the websocket-client the project already depends on: no WebDriver
binary, no extra package. The browser reports its endpoint in DevToolsActivePort; one
WebSocket carries every command, and a reader thread files responses and events.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import websocket


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or answered a command with an error."""


class Chromium:
    """One headless Chromium process with a private profile under `tmp`."""

    def __init__(self, tmp: Path, width: int = 1440, height: int = 900) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            raise BrowserError("chromium is not installed: run `make test`, which installs it")
        profile = tmp / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        args = [
            exe,
            "--headless=new",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to sandbox itself as root
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a previous browser's, naming a port now closed
        self.log_path = tmp / "chromium.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BrowserError(f"chromium did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        try:
            self._ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=60)
        except OSError as exc:
            self.close()
            raise BrowserError(f"cannot reach chromium's DevTools on port {port}: {exc}") from None
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._results: dict[int, dict] = {}
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                msg = json.loads(self._ws.recv())
            except Exception:
                with self._cond:
                    self._results[-1] = {"error": {"message": "the DevTools connection closed"}}
                    self._cond.notify_all()
                return
            with self._cond:
                if "id" in msg:
                    self._results[msg["id"]] = msg
                else:
                    self.events.append(msg)
                self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Run one DevTools command and return its result (BrowserError on an error)."""
        cid = next(self._ids)
        msg: dict = {"id": cid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        with self._cond:
            if not self._cond.wait_for(lambda: cid in self._results or -1 in self._results, 60):
                raise BrowserError(f"{method}: no answer in 60 s")
            reply = self._results.pop(cid, None) or self._results[-1]
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def new_page(self) -> Page:
        """A new tab with the runtime, log and page domains enabled."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", session=session)
        return page

    def close(self) -> None:
        """Quit the browser."""
        ws = getattr(self, "_ws", None)
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Page:
    """One tab: navigate, evaluate JavaScript, read its console errors, take screenshots."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def navigate(self, url: str, timeout: float = 60) -> None:
        """Open url and wait until its document has loaded."""
        res = self.browser.send("Page.navigate", {"url": url}, self.session)
        if res.get("errorText"):
            raise BrowserError(f"{url}: {res['errorText']}")
        deadline = time.monotonic() + timeout
        while self.evaluate("location.href + ' ' + document.readyState") != f"{url} complete":
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not load in {timeout:g} s")
            time.sleep(0.05)

    def evaluate(self, expression: str) -> object:
        """The JSON value of a JavaScript expression evaluated in the page."""
        res = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            self.session,
        )
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression!r} threw: {res['exceptionDetails']}")
        return res["result"].get("value")

    def console_errors(self) -> list[str]:
        """Every console error, uncaught exception and error log entry of this tab so far."""
        out = []
        with self.browser._cond:
            events = [e for e in self.browser.events if e.get("sessionId") == self.session]
        for e in events:
            method, params = e["method"], e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                out.append(f"log {entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
        return out

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport."""
        data = self.browser.send("Page.captureScreenshot", {"format": "png"}, self.session)
        path.write_bytes(base64.b64decode(data["data"]))
        return path
