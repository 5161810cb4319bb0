"""CLI verbs that run processes: worker, flower, demo, up, metrics (and the scenario's)."""

from __future__ import annotations

import ipaddress
import os
import sys
import time

import click

from backfill_engine.runtime import lacking_line, missing_settings
from backfill_engine.settings import Settings
from orchestrator.context import AppContext
from orchestrator.demo import DEFAULT_SEED
from orchestrator.errors import BackfillError
from orchestrator.metrics import DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT
from orchestrator.scenario import scenario_commands
from orchestrator.stack import FLOWER_TASK_COLUMNS, celery_argv, worker_argv


def _is_loopback(address: str) -> bool:
    if address in ("localhost", ""):
        return address == "localhost"
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _env(settings: Settings) -> dict[str, str]:
    """The environment a Celery process (worker or Flower) runs with, for these settings."""
    return {**os.environ, **settings.to_env()}


def flower_auth_problem(address: str, basic_auth: str | None) -> str | None:
    """Why Flower must not start this way, or None when it may."""
    if basic_auth is not None and (":" not in basic_auth or not basic_auth.split(":", 1)[1]):
        return "FLOWER_BASIC_AUTH must look like user:password"
    if not _is_loopback(address) and not basic_auth:
        return (
            f"refusing to expose Flower on {address} without auth: "
            "set FLOWER_BASIC_AUTH=user:password or bind to 127.0.0.1"
        )
    return None


@click.command()
@click.option("--concurrency", type=click.IntRange(1, 512), default=2, show_default=True)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default="prefork",
    show_default=True,
)
@click.option("--name", default=None, help="Worker node name (default worker-<pid>).")
@click.pass_obj
def worker(app: AppContext, concurrency: int, pool: str, name: str | None) -> None:
    """Run a Celery worker for backfill batches (`celery -A backfill_workers.app worker`)."""
    s = app.resolved_settings()
    lacking = missing_settings(s)
    for variable, backfills in lacking:
        # Not fatal: this worker runs the backfills it can; the others' batches go to
        # workers that have the setting, and `backfill status` names this one.
        click.echo(f"warning: {lacking_line(variable, backfills)}", err=True)
    env, argv = _env(s), worker_argv()
    if lacking:
        env["BACKFILL_LACKING_SAID"] = "1"  # said once, here: the worker does not repeat it
    argv += [
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--queues",
        s.queue,
        "--hostname",
        f"{name or 'worker-' + str(os.getpid())}@%h",
        "-E",
    ]
    if app._stack is not None and app._stack.children:
        # We started embedded servers: stay the parent so they stop when the worker stops.
        import subprocess

        proc = subprocess.Popen(argv, env=env)
        try:
            sys.exit(proc.wait())
        except KeyboardInterrupt:
            proc.terminate()
            sys.exit(proc.wait())
    os.execvpe(argv[0], argv, env)


@click.command()
@click.option("--address", default=None, help="Bind address (default FLOWER_ADDRESS, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default FLOWER_PORT, 5555)."
)
@click.pass_obj
def flower(app: AppContext, address: str | None, port: int | None) -> None:
    """Start Flower on the configured broker; auth is mandatory beyond loopback."""
    s = app.settings
    address = address or s.flower_address
    problem = flower_auth_problem(address, s.flower_basic_auth)
    if problem:
        raise BackfillError(problem)
    s = app.resolved_settings()
    env, argv = _env(s), celery_argv("flower")
    argv += [
        f"--address={address}",
        f"--port={port or s.flower_port}",
        f"--tasks_columns={FLOWER_TASK_COLUMNS}",
    ]
    # Flower reads FLOWER_BASIC_AUTH from the environment: the password never shows in `ps`.
    os.execvpe(argv[0], argv, env)


@click.command()
@click.option(
    "--seed",
    type=click.IntRange(1, 10_000_000),
    default=DEFAULT_SEED,
    show_default=True,
    help="Documents in the local scenario's collection.",
)
@click.option("--workers", "n_workers", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--latency-ms", type=click.IntRange(0, 60_000), default=10, show_default=True)
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
@click.pass_obj
def demo(
    app: AppContext,
    seed: int,
    n_workers: int,
    concurrency: int,
    latency_ms: int,
    no_flower: bool,
) -> None:
    """Embedded stack, seed documents, `migrate up` with real workers, print a summary."""
    from orchestrator.demo import DemoOptions, run_demo

    run_demo(
        app,
        DemoOptions(
            seed=seed,
            workers=n_workers,
            concurrency=concurrency,
            latency_ms=latency_ms,
            flower=not no_flower,
        ),
    )


@click.command()
@click.option("--workers", "n_workers", type=click.IntRange(0, 64), default=2, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option(
    "--source-latency-ms",
    type=click.IntRange(0, 60_000),
    default=10,
    show_default=True,
    help="Latency of the scenario's API stand-ins (those whose URL is unset).",
)
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
@click.option(
    "--seed",
    type=click.IntRange(0, 10_000_000),
    default=0,
    show_default=True,
    help="Seed the local scenario's collection up to this many documents.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_METRICS_PORT,
    show_default=True,
    help="Port of the Prometheus endpoint (another free one if taken).",
)
@click.pass_obj
def up(
    app: AppContext,
    n_workers: int,
    concurrency: int,
    source_latency_ms: int,
    no_flower: bool,
    seed: int,
    metrics_port: int,
) -> None:
    """Run the local stack (MongoDB, Redis, API stand-ins, workers, Flower) until Ctrl-C."""
    from orchestrator.up import UpOptions, run_up

    opts = UpOptions(
        workers=n_workers,
        concurrency=concurrency,
        source_latency_ms=source_latency_ms,
        flower=not no_flower,
        seed=seed,
        metrics_port=metrics_port,
    )
    run_up(app, opts, echo=lambda line: click.echo(line))


@click.command()
@click.option("--address", default=DEFAULT_METRICS_ADDRESS, show_default=True, help="Bind address.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=DEFAULT_METRICS_PORT, show_default=True
)
@click.pass_obj
def metrics(app: AppContext, address: str, port: int) -> None:
    """Serve Prometheus metrics of every recent job (read from MongoDB on each scrape)."""
    from orchestrator.metrics import serve_metrics

    db = app.db()  # fails now, in one line, if MongoDB does not answer
    server = serve_metrics(lambda: db, address, port)
    click.echo(f"serving {server.url}; Ctrl-C stops", err=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


STACK_COMMANDS: list[click.Command] = [worker, flower, demo, up, metrics, *scenario_commands()]
