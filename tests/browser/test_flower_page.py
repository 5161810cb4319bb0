"""Flower, seen through a real headless Chromium during a real run, tells the story."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from backfill_workers.app import create_app
from orchestrator.stack import LOOPBACK, ManagedProcess, free_port, start_flower, start_redis
from tests.browser import chromium
from tests.harness import System, seed_products

# On a Redis of their own: Flower hears every task event on its Redis, and beside other
# tests' jobs its page paginated this job's rows away. (What a busy host once broke here
# was a late `task-sent` renaming a finished batch: tests/workers/test_flower_events.py.)
pytestmark = pytest.mark.e2e

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "flower.png"


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    proc = start_redis(log_dir=tmp_path_factory.mktemp("flower-redis"))
    yield proc
    proc.stop()


@pytest.fixture
def system(system: System, own_redis: ManagedProcess) -> System:
    """The test's system on the module's own Redis (no worker or broker has used it yet)."""
    system.settings = replace(system.settings, redis_url=own_redis.url)
    return system


@pytest.fixture(scope="module")
def browser() -> str:
    binary, why = chromium.ensure()
    if binary is None:
        # Chromium installs with apt-get here and in CI: without it the page is untested.
        pytest.fail(f"no headless Chromium: {why}")
    return binary


def _api(flower: ManagedProcess, auth: tuple[str, str], path: str, **params: Any) -> Any:
    answer = requests.get(f"{flower.url}{path}", auth=auth, params=params, timeout=15)
    answer.raise_for_status()
    return answer.json()


def _start_flower(system: System) -> tuple[ManagedProcess, tuple[str, str]]:
    auth = ("ops", secrets.token_urlsafe(12))
    fs = replace(system.settings, flower_basic_auth=":".join(auth), flower_address=LOOPBACK)
    return start_flower(fs, log_dir=system.log_dir, port=free_port()), auth


def _await_workers(system: System, flower: ManagedProcess, auth: tuple[str, str], n: int) -> None:
    """Until every worker answers Flower's broadcast and Flower's event stream is live.

    The broadcast answer proves only the control channel. Task events are Redis pub/sub:
    whatever a worker publishes before Flower's receiver has subscribed is gone, so the
    first batches would never show. A probe heartbeat that Flower has recorded proves the
    subscription; it is re-sent on each poll, since the early ones are lost the same way.
    """
    wanted = {f"worker-{i + 1}" for i in range(n)}
    system.wait_until(
        lambda: (
            {name.split("@")[0] for name in _api(flower, auth, "/api/workers", refresh=1)} >= wanted
        ),
        what="the workers in Flower",
    )
    probe = f"flower-probe-{secrets.token_hex(4)}@test"
    app = create_app(system.settings)
    with app.connection_for_write() as conn, app.events.Dispatcher(conn, hostname=probe) as ev:

        def probe_seen() -> bool:
            ev.send("worker-heartbeat", freq=2.0, active=0, processed=0)
            return probe in _api(flower, auth, "/api/workers", status=1)

        system.wait_until(probe_seen, what="Flower's event stream")
    app.close()


def _job_tasks(flower: ManagedProcess, auth: tuple[str, str], job_id: str) -> list[dict[str, Any]]:
    # Flower hears every task event on this Redis (other tests' too): keep this job's.
    tasks = _api(flower, auth, "/api/tasks").values()
    return [t for t in tasks if str(t.get("name", "")).endswith(f" of {job_id}")]


def test_tasks_page_shows_job_batch_and_counts(
    system: System, browser: str, tmp_path: Path
) -> None:
    flower, auth = _start_flower(system)
    try:
        seed_products(system.db, 600)
        system.start_workers(2, concurrency=1)
        _await_workers(system, flower, auth, 2)
        job_id = system.launch(batch_size=100)
        assert system.wait(job_id).job["status"] == "completed"
        seen: list[tuple[str, str]] = []

        def six_succeeded() -> bool:
            seen[:] = sorted(
                (str(t.get("name")), str(t.get("state"))) for t in _job_tasks(flower, auth, job_id)
            )
            return sum(1 for _, state in seen if state == "SUCCESS") == 6

        try:
            system.wait_until(six_succeeded, what="six succeeded batch tasks in Flower")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; Flower saw {seen}") from None

        url = f"http://{auth[0]}:{auth[1]}@{LOOPBACK}:{flower.url.rsplit(':', 1)[1]}/tasks"
        dom = chromium.dump_dom(browser, url, tmp_path / "profile")
        rows = re.findall(r"<tr[^>]*>.*?</tr>", dom, flags=re.S)
        batch_rows = [r for r in rows if f"of {job_id}" in r]
        assert len(batch_rows) == 6, dom[-2000:]
        for row in batch_rows:
            assert re.search(rf"batch [1-6]/(6|\?) of {re.escape(job_id)}", row), row
            # The result column: the delivery's counters as JSON (HTML-escaped quotes).
            text = row.replace("&quot;", '"')
            assert '"outcome":"done"' in text and '"written":100' in text, row
            assert '"quarantined":0' in text and '"docs_per_s":' in text, row
            assert "worker-" in row
        assert auth[1] not in dom

        if os.environ.get("CI", "").lower() not in ("1", "true"):
            chromium.screenshot(browser, url, tmp_path / "profile", SCREENSHOT)
    finally:
        flower.stop()


def test_retried_and_failed_batches_show_a_one_line_reason_without_secrets(
    system: System,
) -> None:
    password = secrets.token_urlsafe(12)
    system.settings = replace(system.settings, max_attempts=2, http_max_retries=1)
    system.start_catalog("--error-rate", "1.0")  # every request answers 5xx
    url = system.settings.source_env["CATALOG_URL"]
    # Credentials in the catalog URL: the errors name the API, never the password.
    system.settings = system.settings.with_source_env(
        CATALOG_URL=url.replace("://", f"://ops:{password}@")
    )
    flower, auth = _start_flower(system)
    try:
        seed_products(system.db, 200)
        system.start_workers(1, concurrency=2)
        _await_workers(system, flower, auth, 1)
        job_id = system.launch(batch_size=100)
        assert system.wait(job_id).job["status"] == "completed_with_errors"
        system.wait_until(
            lambda: (
                sorted(t["state"] for t in _job_tasks(flower, auth, job_id))
                == ["FAILURE", "FAILURE", "RETRY", "RETRY"]
            ),
            what="each batch retried once, then failed, in Flower",
        )
        for task in _job_tasks(flower, auth, job_id):
            reason = str(task["exception"])
            assert "\n" not in reason and "SourceUnavailableError" in reason, reason
            assert password not in reason, reason
        assert password not in json.dumps(_api(flower, auth, "/api/tasks"))
    finally:
        flower.stop()
