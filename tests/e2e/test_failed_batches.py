"""A batch that keeps failing ends `failed` with its error; the job goes on; retry re-runs it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backfill_engine.states import METADATA
from orchestrator import jobs
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e


def test_batches_fail_after_max_attempts_and_retry_finishes_them(system: System) -> None:
    system.settings = replace(system.settings, max_attempts=2, http_max_retries=1)
    seed_products(system.db, 400)
    system.start_catalog("--error-rate", "1.0")  # every request answers 5xx
    system.start_workers(2)
    job_id = system.launch(batch_size=100)
    summary = system.wait(job_id)
    assert summary.job["status"] == "completed_with_errors"
    assert summary.batches["failed"] == 4 and summary.items["written"] == 0
    for batch in system.db[METADATA].find({"job_id": job_id}):
        assert batch["attempts"] == 2
        assert "SourceUnavailableError" in batch["last_error"]

    system.start_catalog()  # the provider recovers
    report = jobs.retry(
        system.db,
        system.broker.sender,
        system.settings.queue,
        job_id,
        start_replay=lambda ids, source: pytest.fail("nothing was quarantined"),
    )
    assert report.batches_reset == 4 and report.replay_job_id is None
    final = system.wait(job_id)
    assert final.job["status"] == "completed"
    assert final.items["written"] == 400 and final.batches["done"] == 4
