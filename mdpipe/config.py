"""Configuration: TOML file, then MDPIPE_* environment overrides, then CLI --set overrides.

A bad config is refused before anything starts with one line naming the key and the problem
(ConfigError). Every key and its meaning is documented in config/default.toml.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mdpipe import limits
from mdpipe.candles import parse_interval
from mdpipe.venues import venue_names, venue_spec


class ConfigError(ValueError):
    """A config problem, phrased as one line: '<key>: <what is wrong>'."""


@dataclass
class ShmConfig:
    book_capacity: int = 1 << 16
    trade_capacity: int = 1 << 16
    depth: int = 20
    mode: str = "0600"
    group: str = ""


@dataclass
class FeedConfig:
    name: str = "usdm"
    exchange: str = "binance"
    market: str = "futures"
    ws_url: str = "wss://fstream.binance.com"
    rest_url: str = "https://fapi.binance.com"
    symbols: list[str] = field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"])
    cores: list[int] = field(default_factory=lambda: [0])
    depth_stream: str = "depth@100ms"
    trade_stream: str = "aggTrade"
    snapshot_limit: int = 1000
    book_start: str = "snapshot"  # okx: "snapshot" (in-band) or "rest"
    silence_timeout: float = 10.0
    stream_timeout: float = 60.0
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    rollover_after: float = 82_800.0
    tickers: bool = True  # mark price, funding, open interest, 24 h stats: tickers.<feed>.<n>
    candles: list[str] = field(default_factory=lambda: ["1s", "1m"])  # candles_<i>.<feed>.<n>
    candle_grace: float = 2.0  # seconds after an interval's end before a quiet one closes
    ticker_timeout: float = 30.0  # a symbol's ticker or funding silent this long is stale


@dataclass
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    password_env: str = "MDPIPE_REDIS_PASSWORD"
    key_ttl: int = 300


@dataclass
class PublisherConfig:
    enabled: bool = True
    core: int = -1
    orderbook_channel: str = "orderbook:{symbol}"
    trades_channel: str = "trades:{symbol}"
    market_data_channel: str = "market_data:{symbol}"
    streams: bool = False
    stream_maxlen: int = 100_000
    stream_book_interval: float = 1.0
    orderbook_stream: str = "orderbook_stream:{symbol}"
    trades_stream: str = "trades_stream:{symbol}"
    funding_channel: str = "funding:{symbol}"
    candles_channel: str = "candles:{symbol}"  # + ":<interval>", e.g. candles:BTCUSDT:1m
    levels: int = 20
    batch: int = 512
    reconnect_initial: float = 0.2
    reconnect_max: float = 5.0


@dataclass
class HttpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464
    dashboard: bool = True
    token_env: str = "MDPIPE_HTTP_TOKEN"
    dashboard_streams: int = 8


@dataclass
class SimConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 18765
    venue: str = "binance"
    market: str = "futures"
    symbols: list[str] = field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"])
    rate: int = 2000
    seed: int = 1
    args: list[str] = field(default_factory=list)
    tape: str = ""  # replay this recorded tape instead of a synthetic market
    speed: float = 1.0  # tape: multiple of the recorded pace
    max_speed: bool = False  # tape: as fast as the clients read
    loop: bool = False  # tape: start over at the end


@dataclass
class SupervisorConfig:
    restart_initial: float = 0.5
    restart_max: float = 30.0
    stop_timeout: float = 5.0
    keep_segments: bool = False
    log_format: str = "text"
    log_level: str = "info"
    dead_letter_dir: str = "var/dead-letter"


@dataclass
class HistoryConfig:
    """The archiver: every ring into Parquet files under `dir` (see mdpipe.history)."""

    enabled: bool = False
    dir: str = "var/history"
    # which rings to archive: books, trades, tickers, candles (every candle interval)
    kinds: list[str] = field(default_factory=lambda: ["books", "trades", "tickers", "candles"])
    book_depth: int = 10  # levels per side kept in archived books
    book_interval_ms: int = 0  # 0: every book record; N: the first book of each N ms per symbol
    flush_interval: float = 10.0  # seconds between finalized files
    keep_days: int = 0  # delete days older than this (0: keep everything)
    batch: int = 8192
    core: int = -1


@dataclass
class RecordConfig:
    """The recorder: every raw frame of every ingest connection into tapes under `dir`."""

    enabled: bool = False
    dir: str = "var/tapes"
    flush_interval: float = 1.0  # seconds: at most this much is lost in a crash
    rotate_mb: int = 256  # start a new tape past this size
    queue: int = 100_000  # frames waiting for the writer before frames are dropped (counted)
    level: int = 3  # gzip level, 1 (fast) .. 9 (small)
    keep_days: int = 0  # delete days older than this (0: keep everything)


@dataclass
class Config:
    instance: str = "default"
    shm: ShmConfig = field(default_factory=ShmConfig)
    feeds: list[FeedConfig] = field(default_factory=lambda: [FeedConfig()])
    redis: RedisConfig = field(default_factory=RedisConfig)
    publisher: PublisherConfig = field(default_factory=PublisherConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    source: str = field(default="<defaults>", compare=False)

    @property
    def redis_password(self) -> str | None:
        """The Redis password, taken from the environment variable named in the config."""
        return os.environ.get(self.redis.password_env) or None

    @property
    def http_token(self) -> str | None:
        """The dashboard's access token, taken from the environment variable named in the config."""
        return os.environ.get(self.http.token_env) or None

    def ingest_shards(self) -> list[tuple[FeedConfig, int, int, list[str]]]:
        """(feed, shard index, core, symbols) of every ingest process: symbols round-robin."""
        shards = []
        for feed in self.feeds:
            n = len(feed.cores)
            for i, core in enumerate(feed.cores):
                shards.append((feed, i, core, feed.symbols[i::n]))
        return shards


# ----- loading ----------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check a TOML value against a field type; ints are accepted where numbers are."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__}")
        return [_coerce(f"{key}[{i}]", item, v) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected integer, got boolean")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    """Build a config dataclass from a mapping, refusing unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key (known: {', '.join(fields)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table [{where}]")
            kwargs[key] = _build(tp, value, f"{where}.")
        elif _is_table_list(tp):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{where}: expected an array of tables [[{where}]]")
            item = typing.get_args(tp)[0]
            kwargs[key] = [_build(item, v, f"{where}[{i}].") for i, v in enumerate(value)]
        else:
            kwargs[key] = _coerce(where, tp, value)
    return cls(**kwargs)


def _parse_scalar(key: str, tp: Any, text: str) -> Any:
    """Parse an override given as text (environment or --set) into the field's type."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_parse_scalar(key, item, part.strip()) for part in text.split(",") if part.strip()]
    try:
        if tp is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return tp(text)
    except ValueError:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {text!r}") from None


def _is_table_list(tp: Any) -> bool:
    return typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0])


def _set_path(data: dict[str, Any], path: str, text: str) -> None:
    """Apply one override `a.b=value` (or `feeds.0.symbols=A,B`) to the raw TOML mapping."""
    parts = path.split(".")
    cls: Any = Config
    node: Any = data
    where: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        where.append(part)
        key = ".".join(where)
        hints = typing.get_type_hints(cls)
        if part not in hints or part == "source":
            raise ConfigError(f"{key}: unknown key")
        tp = hints[part]
        rest = len(parts) - i - 1
        if dataclasses.is_dataclass(tp):
            if not rest:
                raise ConfigError(f"{key}: is a table; set one of its keys")
            node, cls = node.setdefault(part, {}), tp
            i += 1
        elif _is_table_list(tp):
            if rest < 2 or not parts[i + 1].isdigit():
                raise ConfigError(f"{key}: name an entry and a key, e.g. {key}.0.symbols")
            items = node.setdefault(part, [{}])
            index = int(parts[i + 1])
            if index >= len(items):
                raise ConfigError(f"{key}.{index}: there are only {len(items)} entries")
            node, cls = items[index], typing.get_args(tp)[0]
            where.append(str(index))
            i += 2
        elif rest:
            raise ConfigError(f"{key}: is not a table")
        else:
            node[part] = _parse_scalar(key, tp, text)
            return
    raise ConfigError(f"{path}: incomplete key")


def _env_overrides(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """MDPIPE_REDIS_URL -> ('redis.url', value); MDPIPE_FEEDS_0_SYMBOLS -> ('feeds.0.symbols', ..)."""
    out = []
    sections = {f.name for f in dataclasses.fields(Config) if f.name not in ("instance", "source")}
    for name, value in env.items():
        if not name.startswith("MDPIPE_") or name in _NOT_CONFIG_ENV:
            continue
        rest = name[len("MDPIPE_") :].lower()
        if rest == "instance":
            out.append(("instance", value))
            continue
        section, _, key = rest.partition("_")
        if section not in sections:
            continue
        if section == "feeds":
            index, _, key = key.partition("_")
            out.append((f"feeds.{index}.{key}", value))
        else:
            out.append((f"{section}.{key}", value))
    return out


# Variables that belong to mdpipe but are not config keys.
_NOT_CONFIG_ENV = {
    "MDPIPE_REDIS_PASSWORD",
    "MDPIPE_HTTP_TOKEN",
    "MDPIPE_TAPES_DIR",
    "MDPIPE_CONFIG",
    "MDPIPE_LOG_FORMAT",
    "MDPIPE_LOG_LEVEL",
}


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    check_ports: bool = False,
) -> Config:
    """Load and validate a config: file (or defaults), environment, then `key=value` overrides.

    check_ports=True also refuses ports already in use: only for the process about to bind
    them (`mdpipe start`), since its children load the same config while they are bound.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(limits.read_config_file(path))
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except PermissionError:
            raise ConfigError(f"config file {path}: permission denied") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path}: is a directory") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"config file {path}: invalid TOML: nested too deeply") from None
        except ValueError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        section = data.get("redis")
        url = section.get("url") if isinstance(section, dict) else None
        _refuse_password(url, "in a config file it gets committed")
    for key, value in _env_overrides(env):
        _set_path(data, key, value)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key.strip() == "redis.url":
            _refuse_password(value.strip(), "with --set it shows in every process list")
        _set_path(data, key.strip(), value.strip())
    _fill_venue_defaults(data)
    cfg = _build(Config, data, "")
    cfg.source = source
    _expand_placeholders(cfg)
    validate(cfg, check_ports=check_ports)
    _check_dashboard_token(cfg, env)
    return cfg


def _fill_venue_defaults(data: dict[str, Any]) -> None:
    """Give each [[feeds]] entry its venue's defaults (market, URLs, streams) for keys it omits."""
    feeds = data.get("feeds")
    if not isinstance(feeds, list):
        return
    for i, entry in enumerate(feeds):
        if not isinstance(entry, dict):
            continue  # _build says what is wrong
        exchange = entry.get("exchange", "binance")
        try:
            spec = venue_spec(exchange)
        except (KeyError, TypeError):
            raise ConfigError(
                f"feeds[{i}].exchange: {exchange!r} is not a supported venue "
                f"({', '.join(venue_names())})"
            ) from None
        market = entry.setdefault("market", spec.MARKETS[0])
        if market not in spec.MARKETS:
            raise ConfigError(
                f"feeds[{i}].market: {market!r} is not a {exchange} market "
                f"({' or '.join(repr(m) for m in spec.MARKETS)})"
            )
        for key, value in spec.DEFAULTS[market].items():
            entry.setdefault(key, value)


MIN_TOKEN_CHARS = 16
# Each open page holds one HTTP worker thread: at most this many, so that /health, /ready
# and /metrics always find a free worker.
MAX_DASHBOARD_STREAMS = 8


def _check_dashboard_token(cfg: Config, env: Mapping[str, str]) -> None:
    """The dashboard off loopback needs a token; a token, where given, must not be guessable."""
    http = cfg.http
    if not (http.enabled and http.dashboard):
        return
    token = env.get(http.token_env) or ""
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"http.token_env: ${http.token_env} holds {len(token)} characters; "
            f"a dashboard token needs at least {MIN_TOKEN_CHARS}"
        )
    if not token and not is_loopback(http.host):
        raise ConfigError(
            f"http.token_env: http.host {http.host!r} is not loopback, so the dashboard needs a "
            f"token: set ${http.token_env} (at least {MIN_TOKEN_CHARS} characters) "
            "or http.dashboard = false"
        )


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _refuse_password(url: object, why: str) -> None:
    """Refuse a Redis URL with a password where it would leak (a file, the command line)."""
    try:
        password = urlsplit(url).password if isinstance(url, str) else None
    except ValueError:
        return  # not a URL: validate() says why
    if password is not None:
        raise ConfigError(
            f"redis.url: holds a password, and {why}: remove it and put the password in "
            "the environment variable named by redis.password_env (MDPIPE_REDIS_PASSWORD)"
        )


def _expand_placeholders(cfg: Config) -> None:
    """Fill {sim.host} and {sim.port} in feed URLs, so one `--set sim.port=N` moves the demo."""
    values = {"{sim.host}": cfg.sim.host, "{sim.port}": str(cfg.sim.port)}
    for i, feed in enumerate(cfg.feeds):
        for key in ("ws_url", "rest_url"):
            url = getattr(feed, key)
            for token, value in values.items():
                url = url.replace(token, value)
            if "{" in url or "}" in url:
                raise ConfigError(
                    f"feeds[{i}].{key}: {url!r} has an unknown placeholder "
                    "(known: {sim.host}, {sim.port})"
                )
            setattr(feed, key, url)


# ----- validation -------------------------------------------------------------------------


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _check_candles(where: str, feed: FeedConfig) -> None:
    """Candle intervals: known units, dividing a day, each once; a non-negative grace."""
    seen: set[int] = set()
    for text in feed.candles:
        try:
            ns = parse_interval(text)
        except ValueError as exc:
            raise ConfigError(f"{where}.candles: {exc}") from None
        if ns in seen:
            raise ConfigError(f"{where}.candles: {text!r} is listed twice")
        seen.add(ns)
    if feed.candle_grace < 0:
        raise ConfigError(f"{where}.candle_grace: must be 0 or positive")


def _check_url(key: str, url: str, schemes: tuple[str, ...]) -> None:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in schemes or not rest:
        raise ConfigError(f"{key}: {url!r} is not a {' or '.join(schemes)} URL")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError:
        raise ConfigError(f"{key}: {url!r} has an invalid port") from None
    if scheme != "unix" and not parts.hostname:
        raise ConfigError(f"{key}: {url!r} has no host")


def _check_core(key: str, core: int, cores: set[int]) -> None:
    if core not in cores:
        have = ", ".join(map(str, sorted(cores)))
        raise ConfigError(
            f"{key}: core {core} does not exist or is not allowed here (cores: {have})"
        )


def _check_symbol_twice(cfg: Config) -> None:
    """One symbol on two feeds of one venue would mix two books in one ring symbol: refuse it.

    On two venues it is fine: the publisher names each venue's channels apart.
    """
    seen: dict[tuple[str, str, str], int] = {}
    for i, feed in enumerate(cfg.feeds):
        for sym in feed.symbols:
            j = seen.setdefault((feed.exchange, feed.market, sym), i)
            if j != i:
                raise ConfigError(
                    f"feeds[{i}].symbols: {sym} is already ingested by feeds[{j}] on the same market"
                )


_TEMPLATE_KEYS = (
    "orderbook_channel",
    "trades_channel",
    "market_data_channel",
    "orderbook_stream",
    "trades_stream",
    "funding_channel",
    "candles_channel",
)


def _check_sim_venue(sim: SimConfig) -> None:
    """The simulator's venue exists and imitates the configured market."""
    try:
        markets = venue_spec(sim.venue).MARKETS
    except KeyError:
        raise ConfigError(
            f"sim.venue: {sim.venue!r} is not a supported venue ({', '.join(venue_names())})"
        ) from None
    if sim.market not in markets:
        raise ConfigError(
            f"sim.market: {sim.market!r} is not a {sim.venue} market "
            f"({' or '.join(repr(m) for m in markets)})"
        )


def validate(cfg: Config, *, check_ports: bool = False) -> None:
    """Check values that types alone cannot; raise ConfigError naming the first bad key."""
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", cfg.instance):
        raise ConfigError(f"instance: {cfg.instance!r} must be letters, digits, '_' or '-'")
    shm = cfg.shm
    for key in ("book_capacity", "trade_capacity"):
        cap = getattr(shm, key)
        if cap < 2 or cap & (cap - 1):
            raise ConfigError(f"shm.{key}: {cap} is not a power of two >= 2")
    if not 1 <= shm.depth <= 1000:
        raise ConfigError(f"shm.depth: {shm.depth} is outside 1..1000")
    for key, kind, depth in (("book_capacity", 1, shm.depth), ("trade_capacity", 2, 0)):
        problem = limits.check_capacity(f"shm.{key}", getattr(shm, key), kind, depth)
        if problem:
            raise ConfigError(problem)
    try:
        mode = int(shm.mode, 8)
    except ValueError:
        raise ConfigError(f"shm.mode: {shm.mode!r} is not an octal mode like '0600'") from None
    if mode & ~0o777 or not mode & 0o600 == 0o600:
        raise ConfigError(f"shm.mode: {shm.mode!r} must give its owner read and write")
    if mode & 0o002:
        raise ConfigError(f"shm.mode: {shm.mode!r} would let any user read the market data")
    if shm.group:
        import grp

        try:
            grp.getgrnam(shm.group)
        except KeyError:
            raise ConfigError(f"shm.group: no group named {shm.group!r}") from None

    if not cfg.feeds:
        raise ConfigError("feeds: at least one [[feeds]] entry is needed")
    cores = os.sched_getaffinity(0)
    names: set[str] = set()
    for i, feed in enumerate(cfg.feeds):
        where = f"feeds[{i}]"
        if not re.match(r"^[A-Za-z0-9_-]{1,16}$", feed.name):
            raise ConfigError(f"{where}.name: {feed.name!r} must be 1-16 letters, digits, '_', '-'")
        if feed.name in names:
            raise ConfigError(f"{where}.name: {feed.name!r} is used by another feed")
        names.add(feed.name)
        try:
            spec = venue_spec(feed.exchange)
        except KeyError:
            raise ConfigError(
                f"{where}.exchange: {feed.exchange!r} is not a supported venue "
                f"({', '.join(venue_names())})"
            ) from None
        if feed.market not in spec.MARKETS:
            raise ConfigError(
                f"{where}.market: {feed.market!r} is not a {feed.exchange} market "
                f"({' or '.join(repr(m) for m in spec.MARKETS)})"
            )
        _check_url(f"{where}.ws_url", feed.ws_url, ("ws", "wss"))
        _check_url(f"{where}.rest_url", feed.rest_url, ("http", "https"))
        if not feed.symbols:
            raise ConfigError(f"{where}.symbols: at least one symbol is needed")
        if len(feed.symbols) > limits.SYMBOLS_PER_FEED_MAX:
            raise ConfigError(
                f"{where}.symbols: {len(feed.symbols)} symbols, more than the "
                f"{limits.SYMBOLS_PER_FEED_MAX} one feed may have"
            )
        seen: set[str] = set()
        for sym in feed.symbols:
            problem = spec.check_symbol(sym)
            if problem:
                raise ConfigError(f"{where}.symbols: {problem}")
            if sym in seen:
                raise ConfigError(f"{where}.symbols: {sym} is listed twice")
            seen.add(sym)
        if not feed.cores:
            raise ConfigError(f"{where}.cores: at least one core is needed")
        if len(feed.cores) > len(feed.symbols):
            raise ConfigError(f"{where}.cores: more ingest processes than symbols")
        for core in feed.cores:
            _check_core(f"{where}.cores", core, cores)
        wrong = spec.check_feed(feed, shm.depth)
        if wrong:
            raise ConfigError(f"{where}.{wrong[0]}: {wrong[1]}")
        for key in (
            "silence_timeout",
            "stream_timeout",
            "reconnect_initial",
            "reconnect_max",
            "ticker_timeout",
        ):
            if getattr(feed, key) <= 0:
                raise ConfigError(f"{where}.{key}: must be positive")
        if feed.rollover_after < 0:
            raise ConfigError(f"{where}.rollover_after: must be 0 (off) or positive")
        _check_candles(where, feed)

    for i, feed in enumerate(cfg.feeds):
        n = len(feed.cores)
        for k in range(n):
            problem = limits.check_connection_plan(f"feeds[{i}].symbols", feed, feed.symbols[k::n])
            if problem:
                raise ConfigError(problem)

    _check_url("redis.url", cfg.redis.url, ("redis", "rediss", "unix"))
    if cfg.redis.key_ttl <= 0:
        raise ConfigError("redis.key_ttl: must be positive")
    pub = cfg.publisher
    if pub.core != -1:
        _check_core("publisher.core", pub.core, cores)
    for key in _TEMPLATE_KEYS:
        template = getattr(pub, key)
        if "{symbol}" not in template:
            raise ConfigError(f"publisher.{key}: {template!r} must contain {{symbol}}")
        try:
            template.format(symbol="X", exchange="x", market="x")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(
                f"publisher.{key}: {template!r} may use only {{symbol}}, {{exchange}}, {{market}}"
            ) from None
    _check_symbol_twice(cfg)
    names = [getattr(pub, key) for key in _TEMPLATE_KEYS]
    if len(set(names)) < len(names):
        raise ConfigError("publisher: channel and stream templates must all differ")
    if pub.stream_maxlen < 1:
        raise ConfigError("publisher.stream_maxlen: must be at least 1")
    if not pub.stream_book_interval > 0:
        raise ConfigError("publisher.stream_book_interval: must be positive (seconds)")
    if not 1 <= pub.levels <= shm.depth:
        raise ConfigError(f"publisher.levels: {pub.levels} must be 1..shm.depth ({shm.depth})")
    if pub.batch < 1:
        raise ConfigError("publisher.batch: must be at least 1")

    if not 0 < cfg.http.port < 65536:
        raise ConfigError(f"http.port: {cfg.http.port} is not a TCP port")
    if not 1 <= cfg.http.dashboard_streams <= MAX_DASHBOARD_STREAMS:
        raise ConfigError(
            f"http.dashboard_streams: {cfg.http.dashboard_streams} must be "
            f"1..{MAX_DASHBOARD_STREAMS}"
        )
    if cfg.sim.enabled and not 0 < cfg.sim.port < 65536:
        raise ConfigError(f"sim.port: {cfg.sim.port} is not a TCP port")
    if cfg.sim.enabled and cfg.http.enabled and cfg.http.port == cfg.sim.port:
        raise ConfigError(f"http.port: {cfg.http.port} is also sim.port")
    if cfg.sim.enabled:
        _check_sim_venue(cfg.sim)
    if cfg.sim.enabled and cfg.sim.tape and not os.path.isfile(cfg.sim.tape):
        raise ConfigError(f"sim.tape: {cfg.sim.tape!r} is not a file")
    if not cfg.sim.speed > 0:
        raise ConfigError(f"sim.speed: {cfg.sim.speed} must be positive")
    sup = cfg.supervisor
    if sup.log_format not in ("text", "json"):
        raise ConfigError(f"supervisor.log_format: {sup.log_format!r} must be 'text' or 'json'")
    if sup.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"supervisor.log_level: {sup.log_level!r} is not a log level")
    if sup.restart_initial <= 0 or sup.restart_max < sup.restart_initial:
        raise ConfigError("supervisor.restart_initial: must be positive and <= restart_max")
    if sup.stop_timeout <= 0:
        raise ConfigError("supervisor.stop_timeout: must be positive")
    _validate_history(cfg, cores)
    if check_ports:
        check_ports_free(cfg)


def _validate_history(cfg: Config, cores: set[int]) -> None:
    hist = cfg.history
    if not 1 <= hist.book_depth <= cfg.shm.depth:
        raise ConfigError(f"history.book_depth: {hist.book_depth} must be 1..shm.depth")
    if hist.book_interval_ms < 0:
        raise ConfigError("history.book_interval_ms: must be >= 0 (0 keeps every book)")
    if not hist.flush_interval > 0:
        raise ConfigError("history.flush_interval: must be positive (seconds)")
    if hist.keep_days < 0:
        raise ConfigError("history.keep_days: must be >= 0 (0 keeps everything)")
    if hist.batch < 1:
        raise ConfigError("history.batch: must be at least 1")
    if not hist.dir:
        raise ConfigError("history.dir: must name a directory")
    known = ("books", "trades", "tickers", "candles")
    for kind in hist.kinds:
        if kind not in known:
            raise ConfigError(f"history.kinds: {kind!r} is not one of {', '.join(known)}")
    if len(set(hist.kinds)) != len(hist.kinds):
        raise ConfigError("history.kinds: a kind is listed twice")
    if hist.enabled and hist.core >= 0:
        _check_core("history.core", hist.core, cores)
    rec = cfg.record
    if not rec.flush_interval > 0:
        raise ConfigError("record.flush_interval: must be positive (seconds)")
    if rec.rotate_mb < 1:
        raise ConfigError("record.rotate_mb: must be at least 1")
    if rec.queue < 1:
        raise ConfigError("record.queue: must be at least 1")
    if not 1 <= rec.level <= 9:
        raise ConfigError(f"record.level: {rec.level} must be 1..9")
    if rec.keep_days < 0:
        raise ConfigError("record.keep_days: must be >= 0 (0 keeps everything)")
    if not rec.dir:
        raise ConfigError("record.dir: must name a directory")


def check_ports_free(cfg: Config) -> None:
    """Refuse ports that something else already listens on (http.port, sim.port)."""
    if cfg.http.enabled and _port_in_use(cfg.http.host, cfg.http.port):
        raise ConfigError(f"http.port: {cfg.http.host}:{cfg.http.port} is in use")
    if cfg.sim.enabled and _port_in_use(cfg.sim.host, cfg.sim.port):
        raise ConfigError(f"sim.port: {cfg.sim.host}:{cfg.sim.port} is in use")


def segment_mode(cfg: Config) -> int:
    """The permission bits of the segments: 0600, or 0640 when a reading group is configured."""
    mode = int(cfg.shm.mode, 8)
    return mode | 0o040 if cfg.shm.group else mode
