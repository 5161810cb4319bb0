"""A worker starts with what it has: a backfill whose API setting it lacks is left to others.

Before, a worker without CATALOG_URL refused to start at all (`backfill worker`), so a
team with no catalog could not run its own backfills on the example's workers.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from catalog_service.data import expected_fields
from orchestrator.progress import summary_table
from orchestrator.stack import start_worker
from tests.harness import System, seed_products
from tests.sources.conftest import ShapeApi, fresh, running

TOKENED_MODULE = """
from backfill_engine import Backfill, FunctionSource, HttpSource, PerPath

TOKENED = Backfill(  # an API that needs its token
    name="tokened",
    collection="items",
    source=HttpSource(
        url_env="TOKENED_URL", token_env="TOKENED_TOKEN", path="/items/{id}", ask=PerPath()
    ),
    writes={"brand": str},
)

DOUBLED = Backfill(  # needs no setting at all
    name="doubled",
    collection="numbers",
    reads=("n",),
    source=FunctionSource(lambda doc, params: {"twice": doc["n"] * 2}),
    writes={"twice": int},
)
"""

pytestmark = pytest.mark.e2e


def test_a_worker_without_the_apis_url_leaves_its_batches_to_one_that_has_it(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CATALOG_URL", raising=False)
    bare = replace(system.settings, source_env={})
    lacking = start_worker(bare, log_dir=system.log_dir, name="worker-bare", concurrency=1)
    system.workers.append(lacking)
    seed_products(system.db, 30)
    job_id = system.launch(batch_size=10)
    system.wait_until(
        lambda: system.summary(job_id).job.get("workers_lacking_settings"),
        90,
        "the worker to say what it lacks",
    )
    assert lacking.alive(), "the worker must keep running its other backfills"
    batches = list(system.db.backfill_metadata.find({"job_id": job_id, "kind": "batch"}))
    assert batches and all(b["attempts"] == 0 and b["lease_owner"] is None for b in batches)
    console = Console(width=200, record=True)
    console.print(summary_table(system.summary(job_id)))
    text = console.export_text()
    assert "CATALOG_URL" in text and "lacking settings" in text
    assert "worker-bare@" in text, "status names the worker (its node name), not just a host"
    assert "CATALOG_URL is not set" in (lacking.log_path.read_text() if lacking.log_path else "")
    # A worker with the setting takes the batches over.
    system.start_workers(1, concurrency=1)
    summary = system.wait(job_id)
    assert summary.job["status"] == "completed" and summary.items["written"] == 30


def test_backfill_worker_starts_and_names_the_unset_setting(system: System) -> None:
    env = {**os.environ, **replace(system.settings, source_env={}).to_env()}
    env.pop("CATALOG_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "worker", "--concurrency", "1"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("warning: CATALOG_URL is not set"), first
        assert "'catalog'" in first
        lines = _stderr_until_ready(proc, timeout=90)
        assert proc.poll() is None, "the worker must start, not exit"
        assert not [x for x in lines if "CATALOG_URL" in x], f"said again: {lines}"
    finally:
        # SIGKILL: nothing reads its stderr any more, so a worker logging its way through a
        # warm shutdown could block on the full pipe.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def items_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShapeApi]:
    yield from running("items", tmp_path_factory.mktemp("items"))


@pytest.fixture
def items_api(items_server: ShapeApi) -> Iterator[ShapeApi]:
    yield from fresh(items_server)


def test_a_worker_without_an_apis_token_runs_its_other_backfills_and_leaves_that_one(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, items_api: ShapeApi
) -> None:
    code = tmp_path / "team_code"
    code.mkdir()
    (code / "tokened_backfills.py").write_text(textwrap.dedent(TOKENED_MODULE))
    monkeypatch.syspath_prepend(str(code))
    system.settings = replace(
        system.settings.with_source_env(TOKENED_URL=items_api.url), imports=("tokened_backfills",)
    )
    env = {"PYTHONPATH": str(code)}
    lacking = start_worker(
        system.settings, log_dir=system.log_dir, name="worker-notoken", extra_env=env
    )
    system.workers.append(lacking)
    # The backfill that needs nothing runs on it, alone, to completion.
    system.db["numbers"].insert_many([{"_id": i, "n": i} for i in range(12)])
    done = system.wait(system.launch(backfill="doubled", batch_size=5))
    assert done.job["status"] == "completed" and done.items["written"] == 12
    twice = {d["_id"]: d["twice"] for d in system.db["numbers"].find()}
    assert twice == {i: 2 * i for i in range(12)}
    # The one whose token it lacks is never taken by it, and status says which worker.
    system.db["items"].insert_many([{"_id": f"p-{k}"} for k in range(8)])
    job_id = system.launch(backfill="tokened", batch_size=4)
    system.wait_until(
        lambda: system.summary(job_id).job.get("workers_lacking_settings"),
        90,
        "the worker to say what it lacks",
    )
    said = system.summary(job_id).job["workers_lacking_settings"]
    assert len(said) == 1 and said[0].startswith("worker-notoken@"), said
    assert said[0].endswith(": TOKENED_TOKEN"), said
    batches = list(system.db.backfill_metadata.find({"job_id": job_id, "kind": "batch"}))
    assert batches and all(b["attempts"] == 0 for b in batches)
    assert items_api.stats()["requests"] == 0, "no request went out without the token"
    log = lacking.log_path.read_text() if lacking.log_path else ""
    assert log.count("TOKENED_TOKEN is not set") == 1, "one line per missing setting"
    # Restarted with the token, the same worker takes them over, and status stops saying
    # it lacks the token.
    lacking.kill()
    again = start_worker(
        system.settings,
        log_dir=system.log_dir,
        name="worker-notoken",
        extra_env={**env, "TOKENED_TOKEN": "t0k3n"},
    )
    system.workers.append(again)
    summary = system.wait(job_id)
    assert summary.job["status"] == "completed" and summary.items["written"] == 8
    assert summary.job.get("workers_lacking_settings") == []
    for doc in system.db["items"].find():
        assert doc["brand"] == expected_fields(doc["_id"])["brand"]


def _stderr_until_ready(proc: subprocess.Popen[str], timeout: float) -> list[str]:
    """The worker's stderr lines up to and including Celery's `ready.` line."""
    assert proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        if " ready." in seen[-1]:
            return seen
    raise AssertionError(f"the worker never said it was ready: {seen[-20:]}")
