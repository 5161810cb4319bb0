"""Replays and scoped runs write only inside every scope and with the params they were given."""

from __future__ import annotations

from dataclasses import replace

import pytest
from bson.objectid import ObjectId

from backfill_engine.states import QUARANTINE
from migrations.versions._catalog import PRODUCTS
from orchestrator import jobs
from orchestrator.backfill_runs import run_backfill
from orchestrator.commands import replay_starter
from tests.harness import System
from tests.orchestrator.retry_helpers import seed_regions

pytestmark = pytest.mark.e2e

GOOD_GTIN = "4006381333931"  # a GTIN-13 with a right check digit
BAD_GTIN = "4006381333932"


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


def test_replay_of_a_check_digit_run_writes_none_of_the_refused_gtins(system: System) -> None:
    seed_regions(system.db, eu=50, us=0, gtin=GOOD_GTIN)
    refused = [ObjectId() for _ in range(100)]
    system.db[PRODUCTS].insert_many([{"_id": i, "gtin": BAD_GTIN} for i in refused])
    system.start_workers(1)
    job_id = system.launch(backfill="gtin14", params=(("require_check_digit", True),))
    assert system.wait(job_id).job["status"] == "completed_with_errors"
    assert system.db[QUARANTINE].count_documents({"job_id": job_id}) == 100

    report = _retry(system, job_id)
    assert report.replay_job_id and report.replayed_items == 100
    system.wait(report.replay_job_id)

    written = system.db[PRODUCTS].count_documents(
        {"_id": {"$in": refused}, "gtin14": {"$exists": True}}
    )
    assert written == 0, f"the replay wrote {written} of 100 refused GTINs"


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
