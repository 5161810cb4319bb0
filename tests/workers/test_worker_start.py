"""Both ways to start a worker run the same Celery `worker` command on the same app.

`backfill worker` and the embedded stack start `python -m backfill_workers.start`, which
loads Celery's `worker` command alone; docker-compose and a team's own deployment run
`celery -A backfill_workers.app worker`. Each takes the other's options and runs batches.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from orchestrator.stack import celery_argv, spawn, worker_argv
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e


def _options(argv: list[str]) -> set[str]:
    out = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", out))


def test_the_lean_start_takes_every_option_of_celerys_worker_command() -> None:
    lean, celery = _options(worker_argv()), _options(celery_argv("worker"))
    assert {"--concurrency", "--pool", "--queues", "--hostname", "--without-gossip"} <= lean
    # Celery's global options (--app, --broker, ...) are the app's own here.
    assert {o for o in celery - lean if o not in ("--app", "--broker", "--workdir")} <= {
        "--result-backend", "--loader", "--config", "--no-color", "--quiet", "--version",
        "--skip-checks",
    }  # fmt: skip
    assert lean <= celery


def test_a_worker_started_by_celerys_cli_runs_batches_as_the_lean_one_does(
    system: System,
) -> None:
    seed_products(system.db, 300)
    argv = [*celery_argv("worker"), "--loglevel", "INFO", "--concurrency", "2"]
    argv += ["--queues", system.settings.queue, "--hostname", "cli-worker@%h"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-E"]
    cli = spawn("cli-worker", argv, system.log_dir / "cli-worker.log", system.settings.to_env())
    try:
        summary = system.wait(system.launch(), timeout=120)
    finally:
        cli.kill()
    assert summary.job["status"] == "completed"
    assert summary.items["written"] == 300
    # No other worker was there: the one Celery's CLI started ran every batch.
    log = (system.log_dir / "cli-worker.log").read_text()
    assert "cli-worker@" in log
    assert log.count("succeeded in") == summary.batches["done"]
