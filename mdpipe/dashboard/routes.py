"""The /dashboard endpoints: the static page, its script and style, and the event stream.

Read-only: GET only, nothing here changes the instance. With a token configured (required
off loopback, see http.token_env) every /dashboard request must carry it: as ?token= (the
page then sets a cookie so its own script and stream carry it), as the cookie, or as
"Authorization: Bearer <token>". Without one, only requests for a loopback host name are
answered.
"""

from __future__ import annotations

import hmac
from http.server import BaseHTTPRequestHandler
from importlib import resources
from urllib.parse import parse_qs, quote, unquote, urlsplit

import orjson

from mdpipe.config import Config, is_loopback
from mdpipe.dashboard.hub import Hub, TooManyStreamsError

PREFIX = "/dashboard"
COOKIE = "mdpipe_dashboard_token"
SEND_TIMEOUT_S = 5.0  # a client that takes no data for this long is dropped
KEEPALIVE_S = 1.0
STATIC = {
    "": ("index.html", "text/html; charset=utf-8"),
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _load_static() -> dict[str, bytes]:
    folder = resources.files("mdpipe.dashboard") / "static"
    return {name: (folder / name).read_bytes() for name, _ in set(STATIC.values())}


def _loopback_host(host_header: str) -> bool:
    """True when a Host header names this machine (127.x.x.x, ::1 or localhost, any port)."""
    try:
        name = urlsplit("//" + host_header.strip()).hostname
    except ValueError:
        return False
    return bool(name) and is_loopback(name)


class Dashboard:
    """Serves the live page of one instance from the supervisor's HTTP server."""

    def __init__(self, cfg: Config) -> None:
        self.token = cfg.http_token
        self.hub = Hub(cfg.instance, cfg.http.dashboard_streams)
        self.static = _load_static()

    @staticmethod
    def handles(path: str) -> bool:
        """True for the paths this serves."""
        return path == PREFIX or path.startswith(PREFIX + "/")

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one GET under /dashboard."""
        path, _, query = handler.path.partition("?")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        sub = path[len(PREFIX) :]
        if self.token is None and not _loopback_host(handler.headers.get("Host", "")):
            # Without a token only this machine may read the page; a web site that points its
            # own name at 127.0.0.1 (DNS rebinding) sends its name, not a loopback one.
            self._json(handler, 403, {"error": "the dashboard answers loopback host names only"})
            return
        given = self._token_of(handler, params)
        if self.token is not None and not (
            given and hmac.compare_digest(given.encode(), self.token.encode())
        ):
            self._json(
                handler,
                401,
                {"error": "the dashboard needs its token: open /dashboard?token=<token>"},
            )
            return
        if sub in STATIC:
            name, ctype = STATIC[sub]
            cookie = None
            if self.token is not None and params.get("token"):
                value = quote(self.token, safe="")
                cookie = f"{COOKIE}={value}; Path={PREFIX}; HttpOnly; SameSite=Strict"
            self._send(handler, 200, self.static[name], ctype, cookie)
        elif sub == "/events":
            self._stream(handler, params.get("ring", ""), params.get("symbol", ""))
        else:
            self._json(handler, 404, {"error": f"no such page {path}"})

    @staticmethod
    def _token_of(handler: BaseHTTPRequestHandler, params: dict[str, str]) -> str | None:
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :].strip()
        for part in handler.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return unquote(value)
        return params.get("token")

    def _stream(self, handler: BaseHTTPRequestHandler, ring: str, symbol: str) -> None:
        """Server-sent events until the client goes away or the server stops."""
        try:
            sub = self.hub.subscribe(ring, symbol)
        except TooManyStreamsError as exc:
            self._json(handler, 503, {"error": str(exc)})
            return
        try:
            handler.close_connection = True
            handler.connection.settimeout(SEND_TIMEOUT_S)
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            for name, value in SECURITY_HEADERS.items():
                handler.send_header(name, value)
            handler.send_header("X-Accel-Buffering", "no")
            handler.end_headers()
            handler.wfile.write(b"retry: 1000\n\n")
            handler.wfile.flush()
            while not self.hub.closed:
                frame = self.hub.next_frame(sub, KEEPALIVE_S)
                handler.wfile.write(frame if frame is not None else b": keepalive\n\n")
                handler.wfile.flush()
        except (TimeoutError, OSError):
            pass  # the client went away or stopped reading: its slot is freed below
        finally:
            self.hub.unsubscribe(sub)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        code: int,
        body: bytes,
        ctype: str,
        cookie: str | None = None,
    ) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            handler.send_header(name, value)
        if cookie:
            handler.send_header("Set-Cookie", cookie)
        handler.end_headers()
        handler.wfile.write(body)

    def _json(self, handler: BaseHTTPRequestHandler, code: int, obj: object) -> None:
        self._send(handler, code, orjson.dumps(obj) + b"\n", "application/json")

    def close(self) -> None:
        """End every open stream."""
        self.hub.close()
