"""`mdpipe start` / `mdpipe stop`: run an instance's processes, restart crashes, stop cleanly.

One supervisor per instance, made exclusive by an flock on mdpipe.<instance>.lock in the
user's private runtime directory (mdpipe.runtime). The file names the supervisor and its
children, so `mdpipe stop` and the next start find them; neither signals a pid from it
before checking that the process is really ours (mdpipe.processes).
Children run in their own process groups and get SIGTERM from the kernel if the supervisor
dies (PR_SET_PDEATHSIG).

The `supervisor` status segment: its symbol table lists the children in order (`sim`,
`ingest.<feed>.<shard>`, `publisher`); counters `restarts`, `g_children`, `g_children_up`,
and for child k `restarts.k`, `g_up.k`, `g_pid.k`, `g_since_ns.k` (start of its current run).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from mdpipe import config as C
from mdpipe import limits
from mdpipe.logs import redact
from mdpipe.logs import setup as setup_logging
from mdpipe.processes import (
    CHILD_MARKER,
    flock_holders,
    is_ours,
    is_supervised_child,
    signal_verified,
)
from mdpipe.runtime import (
    RuntimeStateError,
    is_own_segment,
    open_own_file,
    open_own_file_readonly,
    runtime_dir,
)
from mdpipe.shm.segment import list_segments, process_start_ticks, read_status, unlink_instance
from mdpipe.shm.status import StatusWriter
from mdpipe.shm.writer import WriterAliveError

log = logging.getLogger("mdpipe.supervisor")

STATUS_RING = "supervisor"
_PR_SET_PDEATHSIG = 1
_LOCK_RECORD_MAX = 1 << 16


def lock_path(instance: str) -> Path:
    """Where an instance's lock file lives: in this user's private runtime directory."""
    return runtime_dir() / f"mdpipe.{instance}.lock"


class AlreadyRunningError(RuntimeError):
    """Another supervisor holds the instance's lock."""


# ----- the instance lock ------------------------------------------------------------------


def _alive(pid: int, ticks: int) -> bool:
    return pid > 0 and process_start_ticks(pid) == ticks


def _load_record(raw: bytes) -> dict:
    try:
        info = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _verified_supervisor(instance: str, info: dict, st: os.stat_result) -> bool:
    """The record names a live process of ours that holds this very lock file."""
    pid, ticks = info.get("pid"), info.get("start_ticks")
    if not isinstance(pid, int) or not isinstance(ticks, int) or info.get("instance") != instance:
        return False
    return pid in flock_holders(st.st_dev, st.st_ino) and is_ours(pid, ticks)


def read_lock(instance: str) -> dict | None:
    """The running supervisor's lock record (pid, start_ticks, children, ...), or None.

    Only a record that proves itself is returned: the file is ours, its lock is held, and
    the pid it names is our own process holding that lock and started at start_ticks.
    """
    path = lock_path(instance)
    try:
        fd = open_own_file_readonly(path)
    except (FileNotFoundError, PermissionError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: somebody runs it
        else:
            return None  # nobody holds it: a leftover file
        st = os.fstat(fd)
        raw = os.pread(fd, _LOCK_RECORD_MAX, 0)
    finally:
        os.close(fd)
    info = _load_record(raw)
    return info if _verified_supervisor(instance, info, st) else None


def running_instances() -> list[str]:
    """Names of this user's instances whose supervisor is running."""
    names = []
    for path in runtime_dir().glob("mdpipe.*.lock"):
        name = path.name[len("mdpipe.") : -len(".lock")]
        with contextlib.suppress(RuntimeStateError, OSError):
            if read_lock(name) is not None:
                names.append(name)
    return sorted(names)


class InstanceLock:
    """The exclusive right to run an instance; its file also records who runs it."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.path = lock_path(instance)
        self.fd: int | None = None
        self.previous: dict = {}

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunningError; keeps the previous holder's record.

        The file is created O_EXCL in our private directory and never followed through a
        link; one that is not our regular file raises RuntimeStateError.
        """
        probes = 0
        while True:
            fd = open_own_file(self.path, create=True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                info = read_lock(self.instance)
                if info is None and probes < 50:
                    # Only a reader's brief shared probe (read_lock) was in the way.
                    probes += 1
                    time.sleep(0.01)
                    continue
                info = info or {}
                raise AlreadyRunningError(
                    f"instance {self.instance!r} is already running (supervisor pid "
                    f"{info.get('pid', '?')}); stop it with `mdpipe stop --instance {self.instance}`"
                ) from None
            # The holder may have unlinked the file between our open and flock: retry then.
            try:
                same = os.lstat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        self.previous = _load_record(os.pread(fd, _LOCK_RECORD_MAX, 0))

    def write(self, record: dict) -> None:
        """Replace the lock file's record."""
        assert self.fd is not None
        raw = json.dumps(record).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, raw, 0)

    def release(self) -> None:
        """Remove the file, then drop the lock (in that order, so no one locks a ghost)."""
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


# ----- children ---------------------------------------------------------------------------


_libc = ctypes.CDLL(None, use_errno=True)


def _child_preexec(parent_pid: int) -> None:
    """In the forked child before exec: die with the supervisor, even if it is SIGKILLed."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
        os._exit(1)


@dataclass
class ChildSpec:
    """What to run for one child process, and how to tell it started."""

    name: str
    argv: list[str]
    port: tuple[str, int] | None = None  # wait for this to listen before going on


@dataclass
class Child:
    """A supervised child and its restart bookkeeping."""

    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    started_ns: int = 0
    restarts: int = 0
    failures: int = 0  # crashes in a row
    next_start: float = 0.0
    start_ticks: int = 0

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _sim_clients(cfg: C.Config) -> int:
    """Connections the ingest opens to the simulator (each shard's venue plans its routes),
    so a tape starts only when every one of them has subscribed."""
    from mdpipe.venues import make_venue

    where = f":{cfg.sim.port}"
    routes = sum(
        len(make_venue(feed, symbols).plan())
        for feed, _, _, symbols in cfg.ingest_shards()
        if symbols and where in feed.ws_url
    )
    return max(1, routes)


def child_specs(cfg: C.Config, config_path: str | None, overrides: list[str]) -> list[ChildSpec]:
    """The simulator (if enabled), one ingest process per shard, and the publisher."""
    py = sys.executable
    base = (["--config", config_path] if config_path else []) + [
        arg for kv in overrides for arg in ("--set", kv)
    ]
    specs = []
    if cfg.sim.enabled:
        sim = cfg.sim
        argv = [py, "-m", "mdpipe.cli", "sim", "--host", sim.host, "--port", str(sim.port)]
        argv += ["--venue", sim.venue, "--market", sim.market, "--seed", str(sim.seed)]
        if sim.tape:  # a tape brings its own symbols and pace
            argv += ["--tape", sim.tape, "--speed", str(sim.speed)]
            argv += ["--start-clients", str(_sim_clients(cfg))]
            argv += (["--max"] if sim.max_speed else []) + (["--loop"] if sim.loop else [])
        else:
            argv += ["--symbols", ",".join(sim.symbols), "--rate", str(sim.rate)]
        argv += sim.args
        specs.append(ChildSpec("sim", argv, port=(sim.host, sim.port)))
    for feed, shard, _core, _symbols in cfg.ingest_shards():
        argv = [py, "-m", "mdpipe.ingest", *base, "--instance", cfg.instance]
        argv += ["--feed", feed.name, "--shard", str(shard)]
        specs.append(ChildSpec(f"ingest.{feed.name}.{shard}", argv))
    if cfg.publisher.enabled:
        argv = [py, "-m", "mdpipe.publisher", *base, "--instance", cfg.instance]
        specs.append(ChildSpec("publisher", argv))
    if cfg.history.enabled:
        argv = [py, "-m", "mdpipe.history", *base, "--instance", cfg.instance]
        specs.append(ChildSpec("archiver", argv))
    return specs


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _exit_text(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


class StartError(RuntimeError):
    """The instance could not be started (after the config was accepted)."""


# ----- the supervisor ---------------------------------------------------------------------


class Supervisor:
    """Runs one instance in the foreground until SIGINT/SIGTERM."""

    def __init__(
        self,
        cfg: C.Config,
        config_path: str | None,
        overrides: list[str],
        *,
        keep_segments: bool = False,
    ) -> None:
        self.cfg = cfg
        self.instance = cfg.instance
        self.keep_segments = keep_segments or cfg.supervisor.keep_segments
        self.children = [Child(s) for s in child_specs(cfg, config_path, overrides)]
        self.config_path = config_path
        self.lock = InstanceLock(self.instance)
        self.status: StatusWriter | None = None
        self.http = None
        self._stopping = False
        self._signal: str | None = None

    # -- lifecycle

    def run(self) -> int:
        """Start everything, supervise until a stop signal, stop everything; the exit code."""
        self.lock.acquire()  # AlreadyRunningError goes to the caller
        try:
            self._write_lock()  # the previous run's record stays in self.lock.previous
            self._install_signals()
            self._reap_previous()
            C.check_ports_free(self.cfg)  # ConfigError goes to the caller
            no_room = limits.check_shm_space(self.cfg)
            if no_room:
                raise StartError(no_room)
            log.info(
                "instance %s starting: %d children, config %s, redis %s",
                self.instance,
                len(self.children),
                self.config_path or "<defaults>",
                redact(self.cfg.redis.url),
            )
            self._create_status()
            self._start_http()
            code = 0
            try:
                self._start_all()
                self._loop()
            except StartError as exc:
                log.error("%s", exc)
                code = 1
            finally:
                self._stop_all()
            return code
        finally:
            self._cleanup()

    def _install_signals(self) -> None:
        def on_signal(signum: int, _frame: object) -> None:
            if not self._stopping:
                self._signal = signal.Signals(signum).name
            self._stopping = True

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)

    def _reap_previous(self) -> None:
        """Make sure nothing of a previous (killed) run is left: its children, its segments."""
        prev = self.lock.previous
        timeout = self.cfg.supervisor.stop_timeout
        leftovers = []
        for name, entry in (prev.get("children") or {}).items():
            pid, ticks = (list(entry) + [0, 0])[:2] if isinstance(entry, list) else (0, 0)
            if not (isinstance(pid, int) and isinstance(ticks, int) and _alive(pid, ticks)):
                continue
            if is_supervised_child(pid, ticks, self.instance):
                leftovers.append((name, pid, ticks))
            else:
                log.warning(
                    "the previous record names %s as pid %d, but that process is not a child "
                    "of instance %s: leaving it alone",
                    name,
                    pid,
                    self.instance,
                )
        if leftovers:
            names = ", ".join(f"{n} (pid {p})" for n, p, _ in leftovers)
            log.warning("children of a previous supervisor are still running: %s", names)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(_alive(p, t) for _, p, t in leftovers):
                time.sleep(0.05)
            for name, pid, ticks in leftovers:
                if _alive(pid, ticks):
                    log.warning("killing leftover %s (pid %d)", name, pid)
                    # each child leads its own group; the pid is re-checked as it is signalled
                    signal_verified(pid, ticks, signal.SIGKILL, group=True)
        removed = unlink_instance(self.instance)
        if removed:
            log.info(
                "reclaimed %d segments of a previous run: %s", len(removed), ", ".join(removed)
            )
        self._wait_for_live_writers(timeout)

    def _wait_for_live_writers(self, timeout: float) -> None:
        """Segments of this instance still written by a live process that is not ours."""
        deadline = time.monotonic() + timeout
        while True:
            live = []
            for _, ring in list_segments(self.instance):
                if not is_own_segment(self.instance, ring):
                    continue  # another user's plant is never waited for (nor opened)
                with contextlib.suppress(Exception):
                    st = read_status(self.instance, ring)
                    if st.writer_alive:
                        live.append((ring, st.writer_pid))
            if not live:
                return
            if time.monotonic() >= deadline:
                ring, pid = live[0]
                raise StartError(
                    f"ring {ring} of instance {self.instance!r} is written by live process {pid} "
                    "that this supervisor did not start: stop it first"
                )
            time.sleep(0.05)
            unlink_instance(self.instance)

    def _write_lock(self) -> None:
        me = os.getpid()
        http = self.cfg.http
        self.lock.write(
            {
                "instance": self.instance,
                "pid": me,
                "start_ticks": process_start_ticks(me),
                "config": self.config_path,
                "http": f"http://{http.host}:{http.port}" if http.enabled else None,
                "children": {
                    c.spec.name: [c.proc.pid, c.start_ticks] for c in self.children if c.up
                },
            }
        )

    def _create_status(self) -> None:
        counters = ["restarts", "g_children", "g_children_up"]
        for k in range(len(self.children)):
            counters += [f"restarts.{k}", f"g_up.{k}", f"g_pid.{k}", f"g_since_ns.{k}"]
        try:
            self.status = StatusWriter.create(
                self.instance,
                STATUS_RING,
                entries=[c.spec.name for c in self.children],
                counters=counters,
                mode=C.segment_mode(self.cfg),
                group=self.cfg.shm.group,
            )
        except WriterAliveError as exc:
            raise StartError(str(exc)) from None
        self.status.set("g_children", len(self.children))

    def _start_http(self) -> None:
        if not self.cfg.http.enabled:
            return
        from mdpipe.httpserver import HttpServer

        self.http = HttpServer(self.cfg)
        try:
            self.http.start()
        except OSError as exc:
            self.http = None
            raise C.ConfigError(
                f"http.port: cannot listen on {self.cfg.http.host}:{self.cfg.http.port}: "
                f"{exc.strerror or exc}"
            ) from None
        log.info("serving /metrics /health /ready on %s", self.http.url)

    # -- children

    def _spawn(self, child: Child) -> None:
        """Start a child; when fds or processes run out (EMFILE, EAGAIN) retry it later."""
        spec = child.spec
        parent = os.getpid()
        env = {**os.environ, CHILD_MARKER: self.instance}
        try:
            child.proc = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                process_group=0,
                preexec_fn=lambda: _child_preexec(parent),
                env=env,
            )
        except OSError as exc:
            delay = min(self.cfg.supervisor.restart_initial * 2**child.failures, 5.0)
            child.failures += 1
            child.proc = None
            child.next_start = time.monotonic() + delay
            log.error(
                "cannot start %s: %s; retrying in %.1f s", spec.name, exc.strerror or exc, delay
            )
            return
        child.started = time.monotonic()
        child.started_ns = time.time_ns()
        try:
            child.start_ticks = process_start_ticks(child.proc.pid) or 0
        except OSError:  # EMFILE while reading /proc: the next lock write has it
            child.start_ticks = 0
        log.info("started %s (pid %d)", spec.name, child.proc.pid)
        self._write_lock()

    def _start_all(self) -> None:
        for child in self.children:
            if self._stopping:
                return
            self._spawn(child)
            if child.proc is None:
                raise StartError(f"cannot start {child.spec.name}: out of resources")
            if child.spec.port:
                self._wait_listening(child)
        self._publish_status()

    def _wait_listening(self, child: Child, timeout: float = 20.0) -> None:
        host, port = child.spec.port
        deadline = time.monotonic() + timeout
        while not _port_open(host, port):
            if child.proc.poll() is not None:
                raise StartError(
                    f"{child.spec.name} exited with code {child.proc.returncode} while starting"
                )
            if self._stopping:
                return
            if time.monotonic() > deadline:
                raise StartError(
                    f"{child.spec.name} did not listen on {host}:{port} in {timeout:g} s"
                )
            time.sleep(0.05)
        log.info("%s listening on %s:%d", child.spec.name, host, port)

    def _loop(self) -> None:
        sup = self.cfg.supervisor
        while not self._stopping:
            now = time.monotonic()
            try:
                for k, child in enumerate(self.children):
                    if child.proc is not None and child.proc.poll() is not None:
                        self._on_exit(k, child, now)
                    elif child.proc is None and now >= child.next_start:
                        self._spawn(child)
                    elif (
                        child.proc is not None
                        and child.failures
                        and now - child.started > sup.restart_max
                    ):
                        child.failures = 0  # it has been stable: the next crash starts over
                self._publish_status()
            except OSError as exc:  # EMFILE, ENOMEM: survive it, the next round retries
                log.error("supervisor: %s; retrying", exc.strerror or exc)
            time.sleep(0.05)
        log.info("%s received: stopping instance %s", self._signal or "stop", self.instance)

    def _on_exit(self, k: int, child: Child, now: float) -> None:
        sup = self.cfg.supervisor
        code = child.proc.returncode
        how = _exit_text(code)
        delay = min(sup.restart_initial * 2**child.failures, sup.restart_max)
        child.failures += 1
        child.restarts += 1
        child.proc = None
        child.next_start = now + delay
        if self.status is not None:
            self.status.add("restarts")
            self.status.add(f"restarts.{k}")
        log.warning(
            "%s %s after %.1f s; restart #%d in %.1f s",
            child.spec.name,
            how,
            now - child.started,
            child.restarts,
            delay,
        )

    def _publish_status(self) -> None:
        st = self.status
        if st is None:
            return
        up = 0
        for k, child in enumerate(self.children):
            alive = child.up
            up += alive
            st.set(f"g_up.{k}", int(alive))
            st.set(f"g_pid.{k}", child.proc.pid if alive else 0)
            st.set(f"g_since_ns.{k}", child.started_ns if alive else 0)
        st.set("g_children_up", up)
        st.heartbeat()

    def _stop_all(self) -> None:
        """SIGTERM the producers and the publisher, then the archiver (it drains the rings they
        left), then the simulator; SIGKILL stragglers."""
        timeout = self.cfg.supervisor.stop_timeout
        sim = [c for c in self.children if c.spec.name == "sim"]
        archiver = [c for c in self.children if c.spec.name == "archiver"]
        rest = [c for c in self.children if c.spec.name not in ("sim", "archiver")]
        for group in (rest, archiver, sim):
            self._stop_group(group, timeout)
        self._publish_status()

    def _stop_group(self, group: list[Child], timeout: float) -> None:
        running = [c for c in group if c.up]
        for c in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in running:
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %g s: killing it", c.spec.name, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
                c.proc.wait()
            # Whatever the child itself started goes with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            log.info("%s stopped (exit code %s)", c.spec.name, c.proc.returncode)

    def _cleanup(self) -> None:
        if self.http is not None:
            self.http.stop()
        if self.status is not None:
            self.status.close(unlink=not self.keep_segments)
        if not self.keep_segments:
            removed = unlink_instance(self.instance)
            if removed:
                log.info("removed segments: %s", ", ".join(removed))
        self.lock.release()


# ----- stop -------------------------------------------------------------------------------


def stop_instance(instance: str, timeout: float) -> tuple[bool, str]:
    """SIGTERM an instance's verified supervisor and wait for it to exit; (stopped, message).

    read_lock() only returns a record whose pid is our own mdpipe process holding the
    instance's lock; every signal re-checks that pid's start time through a pidfd.
    """
    info = read_lock(instance)
    if info is None:
        running = running_instances()
        where = f"running: {', '.join(running)}" if running else "no instance is running"
        return False, f"instance {instance!r} is not running ({where})"
    pid, ticks = info["pid"], info["start_ticks"]
    t0 = time.monotonic()
    if not signal_verified(pid, ticks, signal.SIGTERM):
        return True, f"instance {instance!r} (supervisor pid {pid}) had just stopped"
    while _alive(pid, ticks):
        if time.monotonic() - t0 > timeout:
            signal_verified(pid, ticks, signal.SIGKILL)
            return False, (
                f"instance {instance!r} (supervisor pid {pid}) did not stop in {timeout:g} s: "
                "killed it; its children die with it and the next start reclaims its segments"
            )
        time.sleep(0.05)
    return (
        True,
        f"stopped instance {instance!r} (supervisor pid {pid}) in {time.monotonic() - t0:.1f} s",
    )


def check_instance_name(name: str) -> str:
    """An instance name given on the command line, or click.BadParameter saying why not."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise click.BadParameter(
            f"{name!r} is not an instance name (1-64 letters, digits, '_' or '-')",
            param_hint="--instance",
        )
    return name


def default_instance(given: str | None) -> str:
    """--instance, else MDPIPE_INSTANCE, else the only instance present, else 'default'."""
    if given is not None:
        return check_instance_name(given)
    if os.environ.get("MDPIPE_INSTANCE"):
        return os.environ["MDPIPE_INSTANCE"]
    # Only our own segments count: another user's plant must not pick the default.
    present = set(running_instances())
    present |= {inst for inst, ring in list_segments() if is_own_segment(inst, ring)}
    return present.pop() if len(present) == 1 else "default"


# ----- commands ---------------------------------------------------------------------------


@click.command("start")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="MDPIPE_CONFIG",
    help="TOML config file (default: built-in defaults = config/default.toml).",
)
@click.option("--instance", help="Instance name (overrides the config's `instance`).")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key."
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Log lines for people (text) or collectors (json).",
)
@click.option("--keep-segments", is_flag=True, help="Leave the rings in /dev/shm after stopping.")
def start_command(
    config_path: str | None,
    instance: str | None,
    overrides: tuple[str, ...],
    log_format: str | None,
    keep_segments: bool,
) -> None:
    """Run an instance in the foreground: simulator, ingest, publisher, HTTP; Ctrl-C stops it."""
    sets = list(overrides)
    if instance is not None:
        sets.append(f"instance={check_instance_name(instance)}")
    if log_format:
        sets.append(f"supervisor.log_format={log_format}")
    cfg = C.load(config_path, overrides=sets)  # ConfigError: exit 2, printed by mdpipe.cli
    setup_logging(cfg.supervisor.log_format, cfg.supervisor.log_level, export=True)
    sup = Supervisor(cfg, config_path, sets, keep_segments=keep_segments)
    sys.exit(sup.run())  # AlreadyRunningError, StartError, RuntimeStateError: exit 1


@click.command("stop")
@click.option("--instance", help="Instance to stop (default: the only one running).")
@click.option(
    "--timeout", default=15.0, show_default=True, help="Seconds to wait before killing it."
)
def stop_command(instance: str | None, timeout: float) -> None:
    """Stop a running instance (SIGTERM its supervisor and wait until everything is gone)."""
    ok, message = stop_instance(default_instance(instance), timeout)
    if not ok:
        raise click.ClickException(message)
    click.echo(message)
