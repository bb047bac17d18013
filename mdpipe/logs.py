"""Logging setup shared by every mdpipe process: human text by default, JSON lines on request.

Children of `mdpipe start` inherit the choice through MDPIPE_LOG_FORMAT / MDPIPE_LOG_LEVEL,
so one flag switches the whole instance. Credentials in URLs are redacted before output.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time

import orjson

FORMAT_ENV = "MDPIPE_LOG_FORMAT"
LEVEL_ENV = "MDPIPE_LOG_LEVEL"
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

# scheme://user:password@host -> scheme://user:***@host ; scheme://password@host likewise.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<auth>[^/@\s]+)@")


def redact(text: str) -> str:
    """Replace the password (or the lone secret) in every URL of text with ***."""

    def repl(m: re.Match[str]) -> str:
        user, sep, _ = m.group("auth").partition(":")
        return f"{m.group('scheme')}{user + ':***' if sep else '***'}@"

    return _URL_CREDENTIALS.sub(repl, text)


class TextFormatter(logging.Formatter):
    """`2024-08-08 12:00:00.123 INFO  supervisor: message` with credentials redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s")
        self.datefmt = "%Y-%m-%d %H:%M:%S"

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, pid, msg, plus any `extra` fields."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


def setup(fmt: str | None = None, level: str | None = None, *, export: bool = False) -> None:
    """Configure the root logger on stderr; None means the environment's choice, else text/info.

    export=True also sets the environment so child processes log the same way.
    """
    fmt = fmt or os.environ.get(FORMAT_ENV) or "text"
    level = level or os.environ.get(LEVEL_ENV) or "info"
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {LEVELS}, got {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if export:
        os.environ[FORMAT_ENV] = fmt
        os.environ[LEVEL_ENV] = level


def setup_child(log_format: str, log_level: str) -> None:
    """Logging of a process the supervisor spawned: its exported choice wins over the config's."""
    setup(os.environ.get(FORMAT_ENV) or log_format, os.environ.get(LEVEL_ENV) or log_level)
