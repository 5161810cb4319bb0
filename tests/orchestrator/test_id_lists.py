"""Explicit id lists (`--ids-file`, replays): kept out of the job document, planned in scope."""

from __future__ import annotations

import bson
import pytest
from bson.objectid import ObjectId
from pymongo.database import Database

from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.runtime import worker_definitions
from backfill_engine.states import METADATA
from migrations.versions._catalog import PRODUCTS
from orchestrator import jobs
from orchestrator.commands import RunOptions, launch
from tests.harness import System
from tests.orchestrator.retry_helpers import planned_ids, seed_regions
from tests.orchestrator.test_planner import RecordingSender

SMALL_JOB_DOCUMENT = 64 * 1024  # bytes: a job's settings and counters, never its ids


class PlannerDied(Exception):
    pass


def test_an_ids_file_of_200000_ids_plans_and_the_job_document_stays_small(
    system: System,
) -> None:
    ids = [ObjectId() for _ in range(200_000)]

    job_id = system.launch(ids=tuple(ids), batch_size=2000)

    job = system.db[METADATA].find_one({"_id": job_id})
    assert job is not None
    assert len(bson.encode(job)) < SMALL_JOB_DOCUMENT
    assert job["planning"]["done"] and job["planning"]["items"] == 200_000
    assert planned_ids(system.db, job_id) == ids
    summary = jobs.summarize(system.db, job_id).as_dict()
    assert "ids" not in summary["params"]


def test_an_ids_file_with_a_filter_plans_only_listed_ids_inside_it_in_file_order(
    system: System,
) -> None:
    eu_us = seed_regions(system.db, eu=10, us=10)
    listed = [*eu_us[15:], *reversed(eu_us[:10]), *eu_us[10:15]]  # US and EU mixed, unsorted

    job_id = system.launch(
        backfill="gtin14", ids=tuple(listed), scope=(("region", "EU"),), batch_size=3
    )

    assert planned_ids(system.db, job_id) == list(reversed(eu_us[:10]))


def test_an_ids_file_run_keeps_to_the_definitions_query(system: System) -> None:
    ids = seed_regions(system.db, eu=6, us=0)
    system.db[PRODUCTS].update_many({"_id": {"$in": ids[:2]}}, {"$set": {"gtin": 42}})

    job_id = system.launch(backfill="gtin14", ids=tuple(ids), batch_size=4)

    assert planned_ids(system.db, job_id) == ids[2:]  # gtin14's query: a string gtin


def test_a_planner_killed_halfway_through_an_ids_file_resumes_without_gaps_or_twins(
    system: System,
) -> None:
    eu_us = seed_regions(system.db, eu=12, us=8)
    listed = list(reversed(eu_us))

    def die_after_two(batches: int, _items: int) -> None:
        if batches == 2:
            raise PlannerDied

    opts = RunOptions(backfill="gtin14", ids=tuple(listed), scope=(("region", "EU"),), batch_size=3)
    with pytest.raises(PlannerDied):
        launch(
            system.db,
            system.broker,
            opts,
            on_batch=die_after_two,
            definitions=worker_definitions(system.settings),
        )
    job = system.db[METADATA].find_one({"kind": "job", "backfill": "gtin14"})
    assert job is not None and not job["planning"]["done"]
    system.db[METADATA].update_one({"_id": job["_id"]}, {"$set": {"planner": None}})  # lease gone

    plan_job(system.db, RecordingSender(), "q", job["_id"])

    assert planned_ids(system.db, job["_id"]) == list(reversed(eu_us[:12]))


def test_a_job_from_an_earlier_release_with_ids_in_its_params_still_plans(db: Database) -> None:
    ids = [ObjectId() for _ in range(7)]
    job, _ = start_or_join(
        db,
        backfill="catalog",
        collection=PRODUCTS,
        batch_size=3,
        max_in_flight=2,
        rate_per_second=10,
        params={"ids": ids},
        exclusive_key="catalog:ids:legacy",
    )

    plan_job(db, RecordingSender(), "q", str(job["_id"]))

    assert planned_ids(db, str(job["_id"])) == ids
