"""Hooks that raise never fail or corrupt a batch; a failure policy that raises falls back to
releasing the batch for retry. In-process batch runs on the real SecantusDB and Redis."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pymongo
import pytest
import redis

from backfill_engine.batch_outcome import BatchOutcome
from backfill_engine.batch_run import process_batch
from backfill_engine.definition import Backfill
from backfill_engine.hooks import BatchHook, default_hooks
from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.runtime import Runtime
from backfill_engine.settings import Settings
from backfill_engine.sources import SourceContext, SourceResult
from backfill_engine.states import METADATA
from backfill_engine.store import batch_id
from tests.engine.test_hooks import Raising
from tests.orchestrator.test_planner import RecordingSender


class Doubling:
    """A source that answers `n * 2` for each document's `n`; or times out, when told to."""

    rate_bucket = None
    keyed_by_string = False

    def __init__(self, times_out: bool = False) -> None:
        self.times_out = times_out

    def fetch(self, docs: Sequence[Any], ctx: SourceContext) -> SourceResult:
        if self.times_out:
            raise TimeoutError("the source took too long")
        return SourceResult(items={d["_id"]: {"twice": d["n"] * 2} for d in docs})


def _runtime(settings: Settings, backfill: Backfill) -> Runtime:
    assert settings.mongo_url and settings.redis_url
    client: pymongo.MongoClient = pymongo.MongoClient(settings.mongo_url)
    rds = redis.Redis.from_url(settings.redis_url)
    return Runtime(settings, client[settings.mongo_db], rds, {backfill.name: backfill})


def _job(rt: Runtime, backfill: Backfill, n: int) -> str:
    rt.db["numbers"].insert_many([{"_id": i, "n": i} for i in range(n)])
    job, _ = start_or_join(
        rt.db,
        backfill=backfill.name,
        collection="numbers",
        batch_size=n,
        max_in_flight=1,
        rate_per_second=100,
    )
    job_id = str(job["_id"])
    plan_job(rt.db, RecordingSender(), rt.settings.queue, job_id)
    return job_id


DOUBLING = Backfill(
    name="doubling",
    collection="numbers",
    reads=("n",),
    source=Doubling(),
    writes={"twice": int},
    subchunk_size=4,
)


def test_a_hook_raising_everywhere_leaves_the_batch_done_with_its_data(
    settings: Settings, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rt = _runtime(settings, DOUBLING)
    job_id = _job(rt, DOUBLING, 10)
    sender = RecordingSender()
    hooks: list[BatchHook] = [*default_hooks(rt, sender), Raising()]
    with caplog.at_level(logging.ERROR):
        outcome = process_batch(rt, sender, job_id, 0, "w", hooks=hooks)
    assert outcome is BatchOutcome.DONE
    assert {d["_id"]: d["twice"] for d in db["numbers"].find()} == {i: i * 2 for i in range(10)}
    batch = db[METADATA].find_one({"_id": batch_id(job_id, 0)})
    assert batch["status"] == "done" and batch["counters"]["written"] == 10
    assert batch["processed"] == 10 and "timings" in batch  # the engine's hooks still ran
    failed = {
        r.getMessage().split("hook Raising.")[1]
        for r in caplog.records
        if "Raising." in r.getMessage()
    }
    assert {
        "before_batch failed; ignored",
        "before_subchunk failed; ignored",
        "before_source failed; ignored",
        "after_source failed; ignored",
        "after_write failed; ignored",
        "after_phase failed; ignored",
        "checkpoint_fields failed; ignored",
        "after_batch failed; ignored",
    } <= failed


def test_a_raising_failure_policy_falls_back_to_releasing_the_batch_for_retry(
    settings: Settings, db: Any
) -> None:
    slow = Backfill(
        name="doubling",
        collection="numbers",
        reads=("n",),
        source=Doubling(times_out=True),
        writes={"twice": int},
    )
    rt = _runtime(settings, slow)
    job_id = _job(rt, slow, 5)
    sender = RecordingSender()
    outcome = process_batch(rt, sender, job_id, 0, "w", hooks=[Raising()])
    assert outcome is BatchOutcome.RETRY
    batch = db[METADATA].find_one({"_id": batch_id(job_id, 0)})
    assert batch["status"] == "queued" and batch["lease_owner"] is None
    assert batch["errors"][-1]["error"].startswith("TimeoutError: the source took too long")
    assert [args for _, args in sender.sent] == [[job_id, 0]]  # re-sent for later
    assert all("twice" not in d for d in db["numbers"].find())
