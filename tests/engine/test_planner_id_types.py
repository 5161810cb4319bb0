"""Planning over `_id`s of every type a batch can carry, resumed after each batch.

Real SecantusDB; batches run in-process through `process_batch` (a worker's code path)
against the catalog stand-in, so a planned id is one a worker can also take.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import redis
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Timestamp
from pymongo.database import Database

from backfill_engine.batch_outcome import BatchOutcome
from backfill_engine.batch_run import process_batch
from backfill_engine.notify import NOTIFICATIONS
from backfill_engine.planner import UnsupportedIdError, plan_job, start_or_join
from backfill_engine.runtime import Runtime, worker_definitions
from backfill_engine.states import BATCH_IDS, METADATA, JobStatus
from backfill_engine.store import load_batch_ids
from migrations.versions._catalog import PRODUCTS
from tests.harness import System
from tests.orchestrator.test_planner import RecordingSender

# Every BSON type group a batch carries, more than one value where the type has more.
MIXED_IDS: list[Any] = [
    MaxKey(),
    Timestamp(1_700_000_000, 2),
    Timestamp(1_700_000_000, 1),
    dt.datetime(2024, 5, 1),
    dt.datetime(2023, 1, 1),
    True,
    False,
    ObjectId(),
    ObjectId(),
    Binary(b"\x02", 0),
    Binary(b"\x01", 5),
    "sku-b",
    "sku-a",
    Int64(2**40),
    7,
    -1.5,
    None,
    MinKey(),
]


def _job(db: Database, batch_size: int) -> str:
    job, created = start_or_join(
        db,
        backfill="catalog",
        collection=PRODUCTS,
        batch_size=batch_size,
        max_in_flight=100,
        rate_per_second=1000,
    )
    assert created
    return str(job["_id"])


def _planned(db: Database, job_id: str) -> list[Any]:
    batches = db[METADATA].find({"kind": "batch", "job_id": job_id}).sort("batch_no", 1)
    return [i for b in batches for i in load_batch_ids(db[BATCH_IDS], b["_id"])]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_planning_resumed_after_every_batch_plans_each_id_exactly_once(
    system: System, batch_size: int
) -> None:
    db = system.db
    db[PRODUCTS].insert_many([{"_id": i} for i in MIXED_IDS])
    expected = [d["_id"] for d in db[PRODUCTS].find({}, {"_id": 1}).sort("_id", 1)]
    job_id = _job(db, batch_size)
    sender = RecordingSender()
    for _ in range(len(MIXED_IDS) + 1):
        job = db[METADATA].find_one({"_id": job_id})
        assert job is not None
        if job["planning"]["done"]:
            break
        # The planner "dies" after one batch; its lease lapses before the next one starts.
        db[METADATA].update_one({"_id": job_id}, {"$set": {"planner": None}})
        assert plan_job(db, sender, "q", job_id, stop_after=1)
    planned = _planned(db, job_id)
    assert [repr(i) for i in planned] == [repr(i) for i in expected]
    job = db[METADATA].find_one({"_id": job_id})
    assert job is not None and job["status"] == JobStatus.RUNNING.value
    batches = int(job["planning"]["batches"])

    # What was planned, a worker can take: every batch runs through and sees each id.
    assert system.settings.redis_url
    rt = Runtime(
        system.settings,
        db,
        redis.Redis.from_url(system.settings.redis_url),
        worker_definitions(system.settings),
    )
    try:
        outcomes = [process_batch(rt, sender, job_id, n, "w") for n in range(batches)]
    finally:
        rt.after_batch.shutdown(wait=True)
    assert outcomes == [BatchOutcome.DONE] * batches
    processed = sum(
        int(b["processed"]) for b in db[METADATA].find({"kind": "batch", "job_id": job_id})
    )
    assert processed == len(MIXED_IDS)


def test_a_decimal128_id_fails_the_job_before_any_batch_is_cut(system: System) -> None:
    # Decimal128 is a number in BSON order but no Python dict key: a worker could not
    # match a document to its answer, so the job is refused before it starts.
    db = system.db
    db[PRODUCTS].insert_many([{"_id": i} for i in range(10)] + [{"_id": Decimal128("10.5")}])
    job_id = _job(db, 2)
    with pytest.raises(UnsupportedIdError) as exc:
        plan_job(db, RecordingSender(), "q", job_id)
    assert "_id of type Decimal128" in str(exc.value)
    job = db[METADATA].find_one({"_id": job_id})
    assert job is not None and job["status"] == JobStatus.FAILED.value
    assert job["fail_reason"] == str(exc.value)
    assert db[METADATA].count_documents({"kind": "batch", "job_id": job_id}) == 0
    assert db[NOTIFICATIONS].count_documents({"job_id": job_id, "event": "failed"}) == 1
