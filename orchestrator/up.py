"""`backfill up`: the whole local stack, kept running until Ctrl-C or SIGTERM.

Other terminals find it through `stack_state` (the data directory's `stack.json`), so
`backfill run NAME`, `status --watch`, `pause` and `resume` need no settings typed. What
runs besides the servers (API stand-ins, seed documents) is the local scenario's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backfill_engine.redact import redact_url
from orchestrator.commands import METADATA_MIGRATION
from orchestrator.context import AppContext
from orchestrator.errors import StackError
from orchestrator.local_flower import start_local_flower
from orchestrator.metrics import DEFAULT_METRICS_PORT, MetricsServer, serve_metrics
from orchestrator.scenario import LocalScenario, load_scenario
from orchestrator.stack import LOOPBACK, ManagedProcess, free_port, start_worker
from orchestrator.stack_state import RunningStack, read_state, remove_state, write_state

WORKER_READY = " ready."  # what a Celery worker logs once it consumes from its queue
WORKER_START_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class UpOptions:
    workers: int = 2
    concurrency: int = 2
    source_latency_ms: int = 10  # of the scenario's API stand-ins
    flower: bool = True
    seed: int = 0  # seed the scenario's collection up to this many (0: leave the data alone)
    metrics_port: int | None = DEFAULT_METRICS_PORT  # None: no metrics endpoint


def _wait_until_ready(worker: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not worker.alive():
            raise StackError(f"{worker.name} exited at start: {worker.log_tail()}")
        if worker.log_path and WORKER_READY in worker.log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise StackError(f"{worker.name} was not ready within {timeout:.0f}s (log {worker.log_path})")


def _prepare_database(
    app: AppContext, scenario: LocalScenario, seed: int, echo: Callable[[str], None]
) -> None:
    """Create the backfill collections, so `backfill run NAME` works at once; seed if asked."""
    from backfill_migrations import runner

    db = app.db()  # the engine's own collections, whatever the scenario
    if scenario.migrations_dir is not None:
        config = runner.RunnerConfig.from_settings(
            app.settings, directory=scenario.migrations_dir, log=lambda _line: None
        )
        runner.up(db, config, to=METADATA_MIGRATION)
    if seed:
        added = scenario.seed(db, seed)
        total = db[scenario.collection].estimated_document_count()
        echo(f"{scenario.collection}: {total:,} ({added:,} seeded now)")


def _port_or_free(port: int) -> int:
    import socket

    with socket.socket() as sock:
        return port if sock.connect_ex((LOOPBACK, port)) != 0 else free_port()


def run_up(app: AppContext, opts: UpOptions, echo: Callable[[str], None]) -> None:
    """Start everything, announce it, keep it running; stop every child on the way out."""
    data_dir = Path(app.settings.data_dir)
    live = read_state(data_dir)
    if live is not None:
        raise StackError(
            f"a stack is already up on {data_dir} (pid {live.pid}); "
            "use it, or stop it first, or point BACKFILL_DATA_DIR elsewhere"
        )
    scenario = load_scenario(os.environ)
    stack = app.stack()
    s = stack.settings
    for note in stack.notes:
        echo(note)
    pid = os.getpid()
    metrics_server: MetricsServer | None = None
    try:
        _prepare_database(app, scenario, opts.seed, echo)
        urls, stand_ins = scenario.start_stand_ins(
            s.source_env, stack.log_dir, opts.source_latency_ms
        )
        for proc in stand_ins:
            stack.add(proc)
        s = s.with_source_env(**urls)
        flower_line = ""
        flower_url = None
        if opts.flower:
            flower, auth_where = start_local_flower(s, log_dir=stack.log_dir)
            stack.add(flower)
            flower_url = flower.url
            flower_line = f"{flower.url}  (user and password in {auth_where})"
        workers = [
            stack.add(
                start_worker(
                    s,
                    log_dir=stack.log_dir,
                    name=f"worker-{i + 1}",
                    concurrency=opts.concurrency,
                )
            )
            for i in range(opts.workers)
        ]
        for worker in workers:
            _wait_until_ready(worker, WORKER_START_TIMEOUT_SECONDS)
        metrics_url = None
        if opts.metrics_port is not None:
            db = app.db()
            metrics_server = serve_metrics(lambda: db, LOOPBACK, _port_or_free(opts.metrics_port))
            metrics_url = metrics_server.url
        app.settings = stack.settings = s
        assert s.mongo_url and s.redis_url  # filled in by the stack above
        # Started here or given by the environment: other terminals need them either way.
        apis = {x.url_env: s.source_env[x.url_env] for x in scenario.stand_ins}
        state = RunningStack(
            pid=pid,
            mongo_url=s.mongo_url,
            redis_url=s.redis_url,
            source_urls=apis,
            queue=s.queue,
            flower_url=flower_url,
            metrics_url=metrics_url,
        )
        state_file = write_state(data_dir, state)
        rows = [
            ("MongoDB", redact_url(s.mongo_url)),
            ("Redis", f"{redact_url(s.redis_url)}  (queue {s.queue})"),
            *(
                (
                    x.label,
                    redact_url(apis[x.url_env])
                    + (f"  (+{opts.source_latency_ms} ms)" if x.url_env in urls else ""),
                )
                for x in scenario.stand_ins
            ),
            ("workers", f"{opts.workers} x {opts.concurrency}  (logs in {stack.log_dir})"),
        ]
        if flower_line:
            rows.append(("Flower", flower_line))
        if metrics_url:
            rows.append(("metrics", metrics_url))
        echo("mongo-backfill stack is up:")
        for name, value in rows:
            echo(f"  {name:<8} {value}")
        echo(f"Other terminals with BACKFILL_DATA_DIR={data_dir} find it through {state_file}:")
        echo(
            f"  backfill run {scenario.backfill} · backfill jobs · "
            "backfill status JOB --watch · pause/resume"
        )
        echo("ready; Ctrl-C stops everything")
        _keep_running(stack.children, echo)
    except KeyboardInterrupt:
        echo("stopping…")
    finally:
        remove_state(data_dir, pid)
        if metrics_server is not None:
            metrics_server.shutdown()
        stack.close()
    echo("stopped: every server and worker this command started has exited")


def _keep_running(children: list[ManagedProcess], echo: Callable[[str], None]) -> None:
    """Sleep until interrupted; a server that dies ends `up`, since nothing works without it."""
    reported: set[int] = set()
    while True:
        time.sleep(POLL_SECONDS)
        for child in children:
            if child.alive() or child.pid in reported:
                continue
            if child.name.startswith("worker-"):
                # The others carry on and the sweeper re-sends its batches; say so once.
                reported.add(child.pid)
                echo(f"warning: {child.name} exited: {child.log_tail(2)}")
            else:
                raise StackError(f"{child.name} exited: {child.log_tail(2)}")
