"""The /dashboard endpoints against one live instance: frames, stream limits, token, assets.

Every test here only reads, so they share one running instance (module fixture). The
browser test, which restarts and stops its instance, is in test_dashboard_browser.py.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import orjson
import pytest
from conftest import RedisServer, remove_segments, unique_instance
from prometheus_client.parser import text_string_to_metric_families
from test_supervisor import REPO, Running, poll

from mdpipe.config import ConfigError, load
from mdpipe.httpserver import HttpServer
from mdpipe.readers import attach

STREAMS = 3  # http.dashboard_streams of the shared instance
GRAFANA = REPO / "deploy" / "grafana" / "mdpipe.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts_test.yml"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One demo instance for every test of this module."""
    tmp = tmp_path_factory.mktemp("dashboard")
    server = RedisServer(tmp)
    server.start()
    name = unique_instance()
    run = Running(name, server.url, tmp, extra=["--set", f"http.dashboard_streams={STREAMS}"])
    try:
        run.start().wait_ready()
        yield run
    finally:
        run.stop()
        run.kill()
        server.stop()
        remove_segments(name)


class Stream:
    """A raw server-sent-events client: the frames of /dashboard/events, one by one."""

    def __init__(self, port: int, query: str = "", headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", "/dashboard/events" + query, headers=headers or {})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status

    def frame(self) -> dict:
        """The next data frame (comments and the retry line skipped)."""
        data = b""
        while True:
            line = self.resp.readline()
            assert line, "the stream ended"
            if line.startswith(b"data: "):
                data += line[len(b"data: ") :]
            elif line == b"\n" and data:
                return orjson.loads(data)

    def close(self) -> None:
        self.resp.close()  # the response holds the socket once the connection let go of it
        self.conn.close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def ring_record(instance: str, ring: str, symbol: str, uid: int) -> dict | None:
    """The book record of `symbol` with last_update_id `uid`, from the ring's history."""
    with attach(instance, ring, kind="book") as reader:
        sid = reader.symbols.index(symbol)
        reader.seek_oldest()
        while True:
            recs = reader.read_batch(4096)
            if not len(recs):
                return None
            hit = recs[(recs["symbol_id"] == sid) & (recs["last_update_id"] == uid)]
            if len(hit):
                rec = hit[-1]
                n_b, n_a = int(rec["bid_count"]), int(rec["ask_count"])
                return {"bids": rec["bids"][:n_b].tolist(), "asks": rec["asks"][:n_a].tolist()}


def test_frames_show_the_rings_book_and_instance(live: Running) -> None:
    stream = Stream(live.http_port, "?ring=books.sim.0&symbol=ETHUSDT")
    try:
        assert stream.status == 200
        assert stream.resp.getheader("Content-Type") == "text/event-stream"
        frames = [stream.frame() for _ in range(5)]
    finally:
        stream.close()
    times = [f["instance"]["time_ns"] for f in frames]
    assert times == sorted(times) and len(set(times)) == len(times), "every frame is new"
    inst = frames[-1]["instance"]
    assert inst["instance"] == live.instance
    assert inst["supervisor"]["alive"] and inst["supervisor"]["children_up"] == 3
    procs = {p["name"]: p for p in inst["processes"]}
    assert set(procs) == {"sim", "ingest.sim.0", "publisher"}
    assert all(p["alive"] and p["pid"] for p in procs.values())
    assert procs["ingest.sim.0"]["core"] is not None
    rings = {r["ring"]: r for r in inst["rings"]}
    assert set(rings) == {"books.sim.0", "trades.sim.0"}
    assert rings["books.sim.0"]["latency"]["feed_to_ring_us"]["p50"] > 0
    assert rings["books.sim.0"]["rate"] > 0
    (feed,) = inst["feeds"]
    assert feed["connections"] == feed["connections_expected"] > 0
    assert feed["books_synced"] == feed["books_total"] == 3
    assert inst["publisher"]["redis_up"] and inst["publisher"]["alive"]
    markets = frames[0]["instance"]["markets"]  # a new page gets the list at once
    assert {(m["ring"], m["symbol"]) for m in markets} == {
        ("books.sim.0", s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    }
    assert all(m["exchange"] == "binance-futures" for m in markets)

    market = frames[-1]["market"]
    assert (market["ring"], market["symbol"], market["state"]) == ("books.sim.0", "ETHUSDT", "live")
    assert len(market["bids"]) == len(market["asks"]) == 10
    assert market["bids"][0][0] < market["asks"][0][0]
    # The frame's book is exactly the ring's record with the same update id.
    rec = ring_record(live.instance, "books.sim.0", "ETHUSDT", int(market["uid"]))
    assert rec is not None, f"update id {market['uid']} is not in the ring"
    assert rec["bids"][:10] == market["bids"] and rec["asks"][:10] == market["asks"]
    assert market["trades"], "the tape has trades"
    ts = [t[0] for t in market["trades"]]
    assert ts == sorted(ts, reverse=True), "the tape is newest first"
    assert {t[3] for t in market["trades"]} <= {1, -1}


def test_default_and_unknown_choices(live: Running) -> None:
    stream = poll(lambda: _open_stream(live), 20, "a free dashboard stream slot")
    try:
        market = stream.frame()["market"]
        assert (market["ring"], market["symbol"]) == ("books.sim.0", "BTCUSDT")
    finally:
        stream.close()
    for query, state in (
        ("?ring=books.sim.0&symbol=DOGEUSDT", "unknown symbol"),
        ("?ring=books.nope.0&symbol=BTCUSDT", "no ring"),
    ):
        stream = poll(lambda q=query: _open_stream(live, q), 20, "a free dashboard stream slot")
        try:
            market = stream.frame()["market"]
            assert market["state"] == state and market["bids"] == [] and market["asks"] == []
        finally:
            stream.close()


def test_streams_are_capped_freed_and_never_starve_health(live: Running) -> None:
    streams: list[Stream] = []
    try:
        for _ in range(STREAMS):
            streams.append(poll(lambda: _open_stream(live), 20, "a free dashboard stream slot"))
            streams[-1].frame()
        over = Stream(live.http_port)
        assert over.status == 503
        assert b"dashboard_streams" in over.resp.read()
        over.close()
        # With every slot streaming, the probes still answer at once.
        for path in ("/health", "/ready", "/metrics"):
            started = time.monotonic()
            code, _, _ = get(live.url + path)
            assert code == 200, path
            assert time.monotonic() - started < 5, f"{path} waited behind the streams"
        for s in streams:
            s.frame()  # and the streams go on
        # A client that goes away frees its slot.
        streams.pop().close()
        poll(lambda: _slot_free(live), 20, "the closed stream's slot to be freed")
    finally:
        for s in streams:
            s.close()


def _slot_free(live: Running) -> bool:
    s = Stream(live.http_port)
    try:
        return s.status == 200
    finally:
        s.close()


def _open_stream(live: Running, query: str = "") -> Stream | None:
    """A stream, or None while an earlier client's slot is still being freed."""
    s = Stream(live.http_port, query)
    if s.status == 200:
        return s
    s.close()
    return None


def test_static_page_and_assets(live: Running) -> None:
    code, headers, body = get(live.url + "/dashboard")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert b'src="/dashboard/app.js"' in body
    for path, ctype in (
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
        ("/dashboard/favicon.svg", "image/svg+xml"),
    ):
        code, headers, body = get(live.url + path)
        assert code == 200 and headers["Content-Type"].startswith(ctype) and body, path
    code, _, body = get(live.url + "/dashboard/nope")
    assert code == 404 and b"/dashboard/nope" in body
    code, _, body = get(live.url + "/")
    assert b"/dashboard" in body
    for host in (f"localhost:{live.http_port}", f"127.0.0.1:{live.http_port}", "[::1]"):
        assert get(live.url + "/dashboard", {"Host": host})[0] == 200, host
    for host in (f"evil.example:{live.http_port}", "10.0.0.1", ""):
        code, _, body = get(live.url + "/dashboard/events", {"Host": host})
        assert code == 403 and b"loopback host names" in body, host
    assert get(live.url + "/health", {"Host": "evil.example"})[0] == 200


def test_token_guards_every_dashboard_path(live: Running, monkeypatch) -> None:
    token = "t0ken; =%/" + uuid.uuid4().hex  # characters a cookie cannot carry as they are
    monkeypatch.setenv("MDPIPE_HTTP_TOKEN", token)
    cfg = load(REPO / "config" / "demo.toml", overrides=[f"instance={live.instance}"])
    cfg.http.port = 0  # any free port: this second server reads the same live instance
    server = HttpServer(cfg)
    server.start()
    try:
        url = server.url
        for path in ("/dashboard", "/dashboard/app.js", "/dashboard/events"):
            code, _, body = get(url + path)
            assert code == 401 and b"token" in body, path
        code, _, _ = get(url + "/dashboard?token=" + quote("wrong-" + token))
        assert code == 401
        code, headers, _ = get(url + "/dashboard?token=" + quote(token))
        assert code == 200
        cookie = headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        assert get(url + "/dashboard/app.js", {"Cookie": cookie})[0] == 200
        assert get(url + "/dashboard/style.css", {"Authorization": f"Bearer {token}"})[0] == 200
        port = int(url.rsplit(":", 1)[1])
        stream = Stream(port, headers={"Cookie": cookie})
        try:
            assert stream.status == 200 and stream.frame()["market"]["state"] == "live"
        finally:
            stream.close()
        assert get(url + "/health")[0] == 200, "probes need no token"
    finally:
        server.stop()


def test_token_config_rules() -> None:
    demo = REPO / "config" / "demo.toml"
    with pytest.raises(ConfigError, match=r"^http.token_env: http.host '0.0.0.0' is not loopback"):
        load(demo, overrides=["http.host=0.0.0.0"], env={})
    with pytest.raises(ConfigError, match=r"^http.token_env: \$MDPIPE_HTTP_TOKEN holds 5 char"):
        load(demo, env={"MDPIPE_HTTP_TOKEN": "short"})
    for bad in (0, 9):
        with pytest.raises(ConfigError, match=rf"^http.dashboard_streams: {bad} must be 1..8"):
            load(demo, overrides=[f"http.dashboard_streams={bad}"], env={})
    load(demo, overrides=["http.host=0.0.0.0"], env={"MDPIPE_HTTP_TOKEN": "x" * 16})
    load(demo, overrides=["http.host=0.0.0.0", "http.dashboard=false"], env={})
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        load(demo, overrides=[f"http.host={host}"], env={})


# ----- deployment assets --------------------------------------------------------------------

_NAME = re.compile(r"\bmdpipe_[a-z0-9_]+")


def _grafana_exprs() -> list[str]:
    dash = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    return exprs


def test_alert_rules_pass_promtool_and_fire_as_specified() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run `make test`, which installs it"
    for args in (["check", "rules", ALERTS.name], ["test", "rules", ALERTS_TEST.name]):
        res = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60, cwd=ALERTS.parent
        )
        assert res.returncode == 0, res.stdout + res.stderr


def test_grafana_dashboard_is_well_formed() -> None:
    dash = json.loads(GRAFANA.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"] if "targets" in p)
    assert len(_grafana_exprs()) > 20


def test_every_metric_the_assets_name_is_served(live: Running) -> None:
    def served() -> set[str]:
        code, _, body = get(live.url + "/metrics")
        assert code == 200
        names = set()
        for fam in text_string_to_metric_families(body.decode()):
            names |= {s.name for s in fam.samples}
        return names

    names = served()
    named = set(_NAME.findall(ALERTS.read_text())) | {
        n for e in _grafana_exprs() for n in _NAME.findall(e)
    }
    missing = named - names
    assert not missing, f"named in deploy/ but not on /metrics: {sorted(missing)}"
    assert {"mdpipe_publisher_redis_up", "mdpipe_ring_last_write_age_seconds"} <= named
