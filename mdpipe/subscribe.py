"""`mdpipe subscribe|unsubscribe SYMBOL...`: change a running instance's symbols.

Talks to the ingest shards' control sockets (`mdpipe.ingest.control`): finds them in the
private runtime directory, asks each which symbols it carries, then sends the change to
the shard that owns the symbol (unsubscribe) or carries the fewest (subscribe). Every
check runs before anything changes: a bad symbol, an unknown feed, an unreachable shard
or a venue limit changes nothing. Errors: one line `mdpipe <command>: <message>`, exit 2
for bad input, 1 for the instance's state.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from mdpipe.ingest.control import ControlError, call, runtime_dir

EXIT_USAGE, EXIT_STATE = 2, 1


def _fail(command: str, message: str, code: int) -> NoReturn:
    click.echo(f"mdpipe {command}: {message}", err=True)
    sys.exit(code)


def control_sockets() -> dict[str, dict[str, dict[int, Path]]]:
    """instance -> feed -> shard -> control socket, for every socket in the runtime directory."""
    found: dict[str, dict[str, dict[int, Path]]] = {}
    for path in runtime_dir().glob("mdpipe.*.ctl"):
        parts = path.name[len("mdpipe.") : -len(".ctl")].split(".")
        if len(parts) < 3 or not parts[-1].isdigit():
            continue
        instance, feed, shard = parts[0], ".".join(parts[1:-1]), int(parts[-1])
        found.setdefault(instance, {}).setdefault(feed, {})[shard] = path
    return found


def _pick(command: str, instance: str | None, feed: str | None) -> tuple[str, str, dict[int, Path]]:
    """(instance, feed, its shards' sockets) named or implied, or exit with why not."""
    try:
        sockets = control_sockets()
    except ControlError as exc:
        _fail(command, str(exc), EXIT_STATE)
    instance = instance or os.environ.get("MDPIPE_INSTANCE") or None
    if instance is None:
        if not sockets:
            _fail(
                command,
                "no running instance has a control socket (is `mdpipe start` running?)",
                EXIT_STATE,
            )
        if len(sockets) > 1:
            _fail(
                command,
                f"several instances are running ({', '.join(sorted(sockets))}): pick one with --instance",
                EXIT_USAGE,
            )
        instance = next(iter(sockets))
    feeds = sockets.get(instance)
    if not feeds:
        _fail(
            command,
            f"instance {instance!r} has no control socket in {runtime_dir()} (is it running?)",
            EXIT_STATE,
        )
    if feed is None:
        if len(feeds) > 1:
            _fail(
                command,
                f"instance {instance!r} has several feeds ({', '.join(sorted(feeds))}): pick one with --feed",
                EXIT_USAGE,
            )
        feed = next(iter(feeds))
    if feed not in feeds:
        _fail(
            command,
            f"unknown feed {feed!r} (instance {instance!r} has: {', '.join(sorted(feeds))})",
            EXIT_USAGE,
        )
    return instance, feed, feeds[feed]


def _ask(command: str, path: Path, op: str, symbols: list[str]) -> dict[str, Any]:
    try:
        answer = call(path, op, symbols)
    except ControlError as exc:
        _fail(command, str(exc), EXIT_STATE)
    if not answer.get("ok"):
        _fail(
            command,
            str(answer.get("error", "refused")),
            EXIT_USAGE if answer.get("usage") else EXIT_STATE,
        )
    return answer


def _owners(command: str, shards: dict[int, Path]) -> dict[int, list[str]]:
    """Every shard's symbols (asking all of them first: one unreachable changes nothing)."""
    return {
        shard: _ask(command, path, "list", [])["symbols"] for shard, path in sorted(shards.items())
    }


_ARGS = [
    click.argument("symbols", nargs=-1, required=True),
    click.option("--feed", help="The [[feeds]] entry (default: the instance's only feed)."),
    click.option(
        "--instance", help="Instance (default: $MDPIPE_INSTANCE, else the only one running)."
    ),
]


def _with_args(f: Any) -> Any:
    for decorator in reversed(_ARGS):
        f = decorator(f)
    return f


@click.command("subscribe")
@_with_args
def subscribe_command(symbols: tuple[str, ...], feed: str | None, instance: str | None) -> None:
    """Add symbols to a running instance's feed; the other books are not touched.

    The change lasts until the instance (or the shard) restarts: add them to the config's
    `symbols` to keep them.
    """
    instance, feed, shards = _pick("subscribe", instance, feed)
    owners = _owners("subscribe", shards)
    wanted = list(dict.fromkeys(symbols))
    have = [f"{s} (shard {i})" for i, syms in owners.items() for s in wanted if s in syms]
    if have:
        _fail("subscribe", f"already subscribed on feed {feed!r}: {', '.join(have)}", EXIT_STATE)
    shard = min(owners, key=lambda i: (len(owners[i]), i))
    _ask("subscribe", shards[shard], "subscribe", wanted)
    click.echo(f"subscribed {' '.join(wanted)} on feed {feed} shard {shard} (instance {instance})")


@click.command("unsubscribe")
@_with_args
def unsubscribe_command(symbols: tuple[str, ...], feed: str | None, instance: str | None) -> None:
    """Remove symbols from a running instance's feed; their books are marked not exact.

    Symbol ids are kept (never renumbered); a restart brings back the config's symbols.
    """
    instance, feed, shards = _pick("unsubscribe", instance, feed)
    owners = _owners("unsubscribe", shards)
    wanted = list(dict.fromkeys(symbols))
    where: dict[int, list[str]] = {}
    missing = []
    for sym in wanted:
        shard = next((i for i, syms in owners.items() if sym in syms), None)
        if shard is None:
            missing.append(sym)
        else:
            where.setdefault(shard, []).append(sym)
    if missing:
        _fail("unsubscribe", f"not subscribed on feed {feed!r}: {', '.join(missing)}", EXIT_USAGE)
    for shard, syms in sorted(where.items()):
        _ask("unsubscribe", shards[shard], "unsubscribe", syms)
    click.echo(f"unsubscribed {' '.join(wanted)} from feed {feed} (instance {instance})")
