"""Config: the shipped files load, every key is documented, every bad value is one clear line."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest
from conftest import free_port

from mdpipe import config as C
from mdpipe.shm.segment import list_segments
from mdpipe.supervisor import lock_path
from mdpipe.venues import make_venue

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "config"


@pytest.mark.parametrize("name", ["default", "spot", "demo"])
def test_shipped_configs_load(name: str) -> None:
    cfg = C.load(CONFIGS / f"{name}.toml", env={})
    assert cfg.feeds and cfg.ingest_shards()
    market = {"default": "futures", "spot": "spot", "demo": "futures"}[name]
    assert cfg.feeds[0].market == market


def test_rollover_after_from_the_environment() -> None:
    cfg = C.load(CONFIGS / "default.toml", env={"MDPIPE_FEEDS_0_ROLLOVER_AFTER": "3600"})
    assert cfg.feeds[0].rollover_after == 3600.0
    assert C.load(CONFIGS / "default.toml", env={}).feeds[0].rollover_after == 82_800.0


def test_demo_feed_urls_follow_sim_port() -> None:
    cfg = C.load(CONFIGS / "demo.toml", overrides=["sim.port=23456"], env={})
    assert cfg.sim.enabled
    assert cfg.feeds[0].ws_url == "ws://127.0.0.1:23456"
    assert cfg.feeds[0].rest_url == "http://127.0.0.1:23456"


def test_production_urls() -> None:
    futures = C.load(CONFIGS / "default.toml", env={}).feeds[0]
    spot = C.load(CONFIGS / "spot.toml", env={}).feeds[0]
    assert (futures.ws_url, futures.rest_url) == (
        "wss://fstream.binance.com",
        "https://fapi.binance.com",
    )
    assert (spot.ws_url, spot.rest_url) == (
        "wss://stream.binance.com:9443",
        "https://api.binance.com",
    )


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _keys(tp, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            out += _keys(typing.get_args(tp)[0], f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_default_toml_documents_every_key() -> None:
    text = (CONFIGS / "default.toml").read_text()
    data = tomllib.loads(text)
    lines = text.splitlines()
    for key in _keys(C.Config):
        section, _, leaf = key.rpartition(".")
        node = data.get(section, data) if section else data
        if isinstance(node, list):
            node = node[0]
        assert leaf in node, f"{key} missing from default.toml"
        # The key's line, or the run of key lines it belongs to, follows a comment.
        idx = next(i for i, ln in enumerate(lines) if ln.startswith(f"{leaf} ="))
        while idx > 0 and not lines[idx - 1].startswith("#"):
            assert "=" in lines[idx - 1], f"{key} has no comment above it"
            idx -= 1
        assert idx > 0 and lines[idx - 1].startswith("#"), f"{key} has no comment"
    # Defaults in the file equal the built-in defaults, apart from the deliberate choices.
    assert C.load(CONFIGS / "default.toml", env={}).supervisor == C.SupervisorConfig()


BAD_TOML = [
    ("[shm]\nfoo = 1\n", "shm.foo: unknown key"),
    ("[http]\nport = 'x'\n", "http.port: expected integer"),
    ("[[feeds]]\nname = 'a'\ncores = [99]\n", "feeds[0].cores: core 99 does not exist"),
    ("[[feeds]]\nname = 'a'\nws_url = 'https://x'\n", "feeds[0].ws_url:"),
    ("[[feeds]]\nname = 'a'\nws_url = 'wss://x:99999'\n", "feeds[0].ws_url:"),
    ("[[feeds]]\nname = 'a'\nrest_url = 'fapi.binance.com'\n", "feeds[0].rest_url:"),
    ("[[feeds]]\nname = 'a'\nws_url = 'ws://{sim.hots}:1'\n", "unknown placeholder"),
    ("[[feeds]]\nname = 'a'\nsymbols = ['btcusdt']\n", "feeds[0].symbols:"),
    ("[redis]\nurl = 'localhost:6379'\n", "redis.url:"),
    ("[shm]\nbook_capacity = 1000\n", "shm.book_capacity:"),
    ("[supervisor]\nlog_format = 'xml'\n", "supervisor.log_format:"),
    ("[supervisor]\nstop_timeout = 0\n", "supervisor.stop_timeout:"),
    ("instance = 'a b'\n", "instance:"),
    ("[http\n", "invalid TOML"),
    (
        "[[feeds]]\nname = 'a'\n[[feeds]]\nname = 'b'\n",
        "feeds[1].symbols: BTCUSDT is already ingested by feeds[0] on the same market",
    ),
    ("[publisher]\ntrades_stream = 'trades:{symbol}'\n", "templates must all differ"),
    ("[publisher]\nstream_maxlen = 0\n", "publisher.stream_maxlen:"),
    ("[publisher]\nstream_book_interval = 0\n", "publisher.stream_book_interval:"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_TOML)
def test_bad_file_is_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(C.ConfigError) as info:
        C.load(path, env={})
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("overrides", "env", "expected"),
    [
        (["nope.key=1"], {}, "nope: unknown key"),
        (["http.port"], {}, "expected key=value"),
        (["feeds.3.symbols=A"], {}, "feeds.3: there are only"),
        ([], {"MDPIPE_HTTP_PORT": "abc"}, "http.port: expected integer"),
        ([], {"MDPIPE_FEEDS_0_CORES": "0,77"}, "feeds[0].cores: core 77"),
        (["sim.enabled=maybe"], {}, "sim.enabled: expected boolean"),
        (["feeds.0.rollover_after=-1"], {}, "feeds[0].rollover_after: must be 0 (off) or positive"),
    ],
)
def test_bad_overrides(overrides: list[str], env: dict[str, str], expected: str) -> None:
    with pytest.raises(C.ConfigError, match=None) as info:
        C.load(None, overrides=overrides, env=env)
    assert expected in str(info.value)


def test_env_and_set_overrides_apply_in_order() -> None:
    env = {"MDPIPE_REDIS_URL": "redis://10.0.0.1:6379/1", "MDPIPE_FEEDS_0_SYMBOLS": "AAA1,BBB2"}
    cfg = C.load(None, overrides=["redis.url=redis://10.0.0.2:6379/2"], env=env)
    assert cfg.redis.url == "redis://10.0.0.2:6379/2"
    assert cfg.feeds[0].symbols == ["AAA1", "BBB2"]


def test_ports_in_use_are_refused_only_when_asked() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        sets = [f"http.port={port}"]
        assert C.load(None, overrides=sets, env={}).http.port == port  # children's view
        with pytest.raises(C.ConfigError, match=rf"http.port: 127.0.0.1:{port} is in use"):
            C.load(None, overrides=sets, env={}, check_ports=True)


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mdpipe.cli", "start", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def test_start_refuses_bad_configs_with_exit_2(tmp_path: Path, instance: str) -> None:
    """Each kind of bad config stops `mdpipe start` with one line and exit 2, starting nothing."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[shm]\nfoo = 1\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    cases = [
        (["--config", str(bad)], {}, "shm.foo: unknown key"),
        (["--config", "config/demo.toml", "--set", "http.port=x"], {}, "http.port: expected"),
        (["--config", "config/demo.toml", "--set", "feeds.0.cores=64"], {}, "core 64"),
        (["--config", "config/demo.toml", "--set", f"http.port={port}"], {}, "is in use"),
        (
            ["--config", "config/demo.toml", "--set", f"sim.port={port}"]
            + ["--set", f"http.port={free_port()}"],
            {},
            "sim.port:",
        ),
        (["--config", "config/demo.toml"], {"MDPIPE_REDIS_URL": "http://x"}, "redis.url:"),
        (["--config", str(tmp_path / "missing.toml")], {}, "not found"),
    ]
    try:
        for args, env, expected in cases:
            res = _start([*args, "--instance", instance], env)
            assert res.returncode == 2, (args, res.stderr)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1, res.stderr
            assert expected in lines[0], (expected, lines[0])
            assert lines[0].startswith("mdpipe start: ")
            assert list_segments(instance) == []
            assert not lock_path(instance).exists()
    finally:
        busy.close()


# ----- hostile and oversized input ---------------------------------------------------------


def _one_line_error(path: object) -> str:
    with pytest.raises(C.ConfigError) as exc:
        C.load(path, env={})
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_config_must_be_a_small_regular_file(tmp_path: Path) -> None:
    """/dev/zero, a FIFO, a directory, a huge or binary file: one line each, nothing hangs."""
    assert "not a regular file" in _one_line_error("/dev/zero")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    assert "not a regular file" in _one_line_error(fifo)  # O_NONBLOCK: no writer, no hang
    assert "not a regular file" in _one_line_error(tmp_path)
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 200_000)
    assert "bytes allowed" in _one_line_error(big)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"instance = \xff\xfe\n")
    assert "not UTF-8" in _one_line_error(binary)


def test_deeply_nested_toml_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "nested too deeply" in _one_line_error(deep)
    inline = tmp_path / "inline.toml"
    inline.write_text("a = " + "{b = " * 20_000 + "1" + "}" * 20_000 + "\n")
    message = _one_line_error(inline)
    assert message.startswith(f"config file {inline}: ")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["shm.book_capacity=268435456"], "shm.book_capacity: 268435456 is more than"),
        (["shm.trade_capacity=1099511627776"], "shm.trade_capacity: 1099511627776 is more than"),
        (["shm.depth=1000", "shm.book_capacity=16777216"], "GiB segment, more than"),
    ],
)
def test_ring_capacities_have_maxima(overrides: list[str], expected: str) -> None:
    with pytest.raises(C.ConfigError, match=expected):
        C.load(None, overrides=overrides, env={})


def _symbols(n: int) -> str:
    return ",".join(f"S{i:04d}USDT" for i in range(n))


def test_symbol_lists_must_fit_the_connection_limits() -> None:
    """1,700 symbols on one process: the venue plans short URLs and more connections (no 414);
    a list beyond the symbol maximum is refused at start."""
    cfg = C.load(None, overrides=[f"feeds.0.symbols={_symbols(1700)}"], env={})
    routes = make_venue(cfg.feeds[0], cfg.feeds[0].symbols).plan()
    assert max(len(r.url) for r in routes) <= C.limits.WS_URL_MAX_BYTES
    one = C.load(None, overrides=["feeds.0.symbols=BTCUSDT"], env={})
    per_symbol = sum(len(r.streams) for r in make_venue(one.feeds[0], ["BTCUSDT"]).plan())
    assert sum(len(r.streams) for r in routes) == per_symbol * 1700  # every stream planned
    with pytest.raises(C.ConfigError, match="feeds\\[0\\].symbols: 5000 symbols, more than"):
        C.load(None, overrides=[f"feeds.0.symbols={_symbols(5000)}"], env={})
    # Spread over the cores there are, each process's share fits.
    cores = sorted(os.sched_getaffinity(0))
    sets = [f"feeds.0.symbols={_symbols(150 * len(cores))}"]
    sets.append(f"feeds.0.cores={','.join(map(str, cores))}")
    cfg = C.load(None, overrides=sets, env={})
    assert max(len(s) for *_, s in cfg.ingest_shards()) == 150


def test_start_checks_free_dev_shm_space(tmp_path: Path, instance: str) -> None:
    """Rings larger than /dev/shm can hold are refused with the numbers, before any is made."""
    vfs = os.statvfs("/dev/shm")
    free = vfs.f_bavail * vfs.f_frsize
    per_feed = C.limits.instance_bytes(C.load(None, overrides=["shm.book_capacity=16777216"]))
    feeds = free // per_feed + 1
    lines = [f'instance = "{instance}"', "[shm]", "book_capacity = 16777216"]
    lines += ["[sim]", "enabled = false", "[http]", "enabled = false"]
    for i in range(feeds):
        lines += ["[[feeds]]", f'name = "f{i}"', f'symbols = ["S{i}USDT"]']
    conf = tmp_path / "big.toml"
    conf.write_text("\n".join(lines) + "\n")
    res = _start(["--config", str(conf)])
    assert res.returncode == 1, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("mdpipe start: shm.book_capacity: the rings need ")
    assert "MiB of /dev/shm and " in last and "MiB are free" in last
    assert list_segments(instance) == []
    assert not lock_path(instance).exists()


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[[feeds]]\nname = 'a'\nexchange = 'kraken'\n", "feeds[0].exchange: 'kraken' is not a supported venue"),
        ("[[feeds]]\nname = 'a'\nexchange = 'bybit'\nsymbols = ['BTC-USDT']\n",
         "feeds[0].symbols: 'BTC-USDT' is not an upper-case Bybit symbol like BTCUSDT ('-' is OKX's form)"),
        ("[[feeds]]\nname = 'a'\nexchange = 'bybit'\nmarket = 'futures'\n",
         "feeds[0].market: 'futures' is not a bybit market ('linear' or 'spot')"),
        ("[[feeds]]\nname = 'a'\nexchange = 'bybit'\ndepth_stream = 'orderbook.1'\n",
         "feeds[0].depth_stream: 'orderbook.1' is not a Bybit book stream"),
        ("[[feeds]]\nname = 'a'\nexchange = 'bybit'\nrollover_after = 3600\n",
         "feeds[0].rollover_after: must be 0 on bybit"),
        ("[[feeds]]\nname = 'a'\nmarket = 'linear'\n",
         "feeds[0].market: 'linear' is not a binance market ('futures' or 'spot')"),
        ("[sim]\nenabled = true\nvenue = 'bybit'\nmarket = 'futures'\n",
         "sim.market: 'futures' is not a bybit market ('linear' or 'spot')"),
    ],
)  # fmt: skip
def test_venue_errors_name_the_key(toml: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(C.ConfigError) as err:
        C.load(path, env={})
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_venue_defaults_fill_what_a_feed_leaves_out(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[[feeds]]\nname = 'b'\nexchange = 'bybit'\nmarket = 'spot'\n")
    feed = C.load(path, env={}).feeds[0]
    assert (feed.ws_url, feed.depth_stream, feed.trade_stream, feed.rollover_after) == (
        "wss://stream.bybit.com", "orderbook.50", "publicTrade", 0.0)  # fmt: skip
    path.write_text("[[feeds]]\nname = 's'\nmarket = 'spot'\n")
    assert C.load(path, env={}).feeds[0].ws_url == "wss://stream.binance.com:9443"


@pytest.mark.parametrize("name", ["bybit", "multi"])
def test_shipped_venue_configs_load(name: str) -> None:
    cfg = C.load(CONFIGS / f"{name}.toml", env={})
    assert {f.exchange for f in cfg.feeds} == (
        {"bybit"} if name == "bybit" else {"binance", "bybit"}
    )
    assert all(f.ws_url.startswith("wss://") for f in cfg.feeds)
