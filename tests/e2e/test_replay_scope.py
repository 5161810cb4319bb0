"""Scoped runs write only inside every scope; a retried slice never stands in for the backfill."""

from __future__ import annotations

from dataclasses import replace

import pytest

from migrations.versions._catalog import PRODUCTS
from orchestrator import jobs
from orchestrator.backfill_runs import run_backfill
from orchestrator.commands import replay_starter
from tests.harness import System
from tests.orchestrator.retry_helpers import seed_regions

pytestmark = pytest.mark.e2e

GOOD_GTIN = "4006381333931"  # a GTIN-13 with a right check digit


def _retry(system: System, job_id: str) -> jobs.RetryReport:
    return jobs.retry(
        system.db,
        system.broker.sender,
        system.settings.queue,
        job_id,
        start_replay=replay_starter(system.db, system.broker, system.settings),
    )


def test_ids_file_with_a_filter_writes_none_of_the_listed_documents_outside_it(
    system: System,
) -> None:
    ids = seed_regions(system.db, eu=50, us=100)
    system.start_workers(1)

    job_id = system.launch(backfill="gtin14", ids=tuple(ids), scope=(("region", "EU"),))
    summary = system.wait(job_id)

    assert summary.job["status"] == "completed"
    assert system.db[PRODUCTS].count_documents({"region": "US", "gtin14": {"$exists": True}}) == 0
    assert (
        system.db[PRODUCTS].count_documents({"region": "EU", "gtin14": GOOD_GTIN.zfill(14)}) == 50
    )


def test_after_a_retried_slice_the_backfills_migration_runs_the_whole_backfill(
    system: System,
) -> None:
    system.settings = replace(system.settings, max_attempts=2, http_max_retries=1)
    seed_regions(system.db, eu=100, us=200)
    system.start_catalog("--error-rate", "1.0")  # every request answers 5xx
    system.start_workers(2)
    slice_id = system.launch(scope=(("region", "EU"),), batch_size=50)
    assert system.wait(slice_id).batches["failed"] == 2
    system.start_catalog()  # the provider recovers
    assert _retry(system, slice_id).batches_reset == 2

    summary = run_backfill(system.db, "catalog", settings=system.settings, log=lambda _m: None)

    assert summary.job["_id"] != slice_id, "the migration joined the retried slice job"
    assert system.db[PRODUCTS].count_documents({"catalog_synced_at": {"$exists": True}}) == 300
