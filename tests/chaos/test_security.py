"""Security defaults: loopback HTTP, no secret in a committed file, TLS, nothing secret logged.

Already proven elsewhere and not repeated: segments are 0600 (0640 with a group), mapped
read-only by readers, and unreadable ones refused (tests/test_ring.py); the JSON logs of a
full run with a password hold no password (tests/test_e2e.py); a rediss:// URL with the
password from the environment reaches a TLS-only redis-server
(tests/test_publisher.py::test_tls_url_and_password_from_the_environment).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import redis
from test_publisher import start_tls_redis
from test_supervisor import PY, REPO, mdpipe

from mdpipe import config as C

from .conftest import Report
from .live import Live, RedisTap, wait

PASSWORD = "chaos-s3cret-Pw"
OTHER = "chaos-0ther-Pw"
CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s\"']*:[^/@\s\"']+@", re.I)


def _keys(table: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in table.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                out += _keys(item, f"{prefix}{key}.")
        out.append(prefix + key)
    return out


def test_shipped_configs_hold_no_secret_and_bind_loopback() -> None:
    paths = sorted((REPO / "config").glob("*.toml"))
    assert len(paths) >= 3
    for path in paths:
        text = path.read_text()
        assert not CREDENTIALS.search(text), f"{path.name}: a URL with credentials"
        keys = _keys(tomllib.loads(text))
        # A key ending in _env names an environment variable (redis.password_env,
        # http.token_env): the secret itself never sits in a file.
        secret = [
            k
            for k in keys
            if re.search(r"pass|secret|token|api_?key", k, re.I) and not k.endswith("_env")
        ]
        assert secret == [], f"{path.name}: {secret}"
        cfg = C.load(path, env={})
        assert cfg.http.host == "127.0.0.1" and cfg.sim.host == "127.0.0.1", path.name
    assert C.Config().http.host == "127.0.0.1"


def test_a_password_in_the_redis_url_comes_only_from_the_environment(tmp_path: Path) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:6379/0"
    conf = tmp_path / "leaky.toml"
    conf.write_text(f'[redis]\nurl = "{url}"\n')
    for kwargs in ({"path": conf}, {"path": None, "overrides": [f"redis.url={url}"]}):
        with pytest.raises(C.ConfigError) as exc:
            C.load(**kwargs, env={})
        message = str(exc.value)
        assert message.startswith("redis.url: ") and "MDPIPE_REDIS_PASSWORD" in message
        assert PASSWORD not in message
    # `mdpipe start` stops before anything runs, with one line that does not repeat it.
    res = subprocess.run(
        [PY, "-m", "mdpipe.cli", "start", "--config", str(conf), "--instance", "leaky"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert PASSWORD not in res.stderr + res.stdout
    # The environment is where a secret belongs: a URL with a password is taken from it.
    assert C.load(None, env={"MDPIPE_REDIS_URL": url}).redis.url == url


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on a TCP port."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.add(addr)
    return found


def test_full_run_over_tls_logs_no_secret(instance, tmp_path, report: Report) -> None:
    """A run with a password and TLS, a Redis that changes its password and comes back:
    the text logs at debug level, stats, metrics and process lists never show a password."""
    tls = start_tls_redis(tmp_path, PASSWORD)
    assert tls is not None, "this redis-server cannot serve TLS (make test installs one that can)"
    proc, port, cert = tls
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    env = {"MDPIPE_REDIS_PASSWORD": PASSWORD}
    live = Live(instance, url, tmp_path, sets=("supervisor.log_level=debug",), env=env)
    tap = RedisTap(url, PASSWORD).start()
    admin = redis.Redis.from_url(url, password=PASSWORD)
    try:
        live.start()
        wait(lambda: len(tap.books) > 10, 20, "books over TLS")
        http, sim = _listening(live.run.http_port), _listening(live.run.sim_port)
        assert http == {"0100007F"} and sim == {"0100007F"}, (http, sim)

        # Redis changes its password and drops every client: refused, counted, logged.
        admin.config_set("requirepass", OTHER)
        admin.close()
        admin = redis.Redis.from_url(url, password=OTHER)
        admin.client_kill_filter(_type="normal", skipme=True)
        wait(lambda: live.run.get("/ready")[0] == 503, 20, "/ready to see the refusal")
        wait(lambda: live.publisher().get("redis_errors", 0) >= 2, 20, "refused reconnects")
        admin.config_set("requirepass", PASSWORD)
        took = wait(lambda: live.run.get("/ready")[0] == 200, 30, "/ready after the password")

        seen = [live.run.log(), mdpipe("stats", "--json", "--instance", instance).stdout]
        seen.append(live.run.get("/metrics")[1].decode())
        seen.append(live.run.get("/ready")[1].decode())
        for pid in live.run.pids().values():
            seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
        assert live.run.stop().returncode == 0
        seen.append(live.run.log())
        assert "redis unreachable" in seen[-1] and "AuthenticationError" in seen[-1]
        for text in seen:
            assert PASSWORD not in text and OTHER not in text
        report(
            "Redis password changed under a TLS run",
            "AUTH refused and counted, /ready 503, back when the password returned; "
            "no password in debug text logs, stats, /metrics, /ready or any process's argv; "
            "HTTP and simulator bound to 127.0.0.1 only",
            took,
            "nothing secret",
        )
    finally:
        admin.close()
        tap.stop()
        live.close()
        proc.kill()
        proc.wait()
