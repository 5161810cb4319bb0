"""The metadata a batch keeps on its way: checkpoints off the critical path, dispatch, completion.

These guard the hot-path savings in docs/benchmarks.md: each one removes database round
trips, and each test here fails if the saving broke what the round trip was for.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pymongo
import pymongo.errors
import pytest
import redis
from pymongo.collection import Collection
from pymongo.database import Database

from backfill_engine import store
from backfill_engine.batch_context import BatchLog
from backfill_engine.checkpoint_pipe import CheckpointPipe
from backfill_engine.hooks.dispatch import after_batch
from backfill_engine.lease_keeper import LeaseKeeper, LeaseLost
from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.runtime import Runtime
from backfill_engine.settings import Settings
from backfill_engine.states import METADATA, QUARANTINE, BatchStatus, JobStatus
from backfill_engine.store import maybe_complete_job, read_job
from migrations.versions._catalog import PRODUCTS
from orchestrator.stack import free_port
from tests.orchestrator.test_planner import RecordingSender


def _job(db: Database, *, batch_size: int = 4, max_in_flight: int = 2) -> str:
    job, _ = start_or_join(
        db,
        backfill="catalog",
        collection="products",
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        rate_per_second=10,
    )
    return str(job["_id"])


def _leased_batch(meta: Collection, job_id: str) -> store.Lease:
    meta.insert_one(store.new_batch(job_id, 0, [1, 2, 3]))
    taken = store.lease_batch(meta, store.batch_id(job_id, 0), "worker-a", 30)
    assert taken is not None
    return taken[0]


def _checkpoint(meta: Collection, lease: store.Lease, processed: int) -> bool:
    return store.checkpoint(
        meta,
        lease,
        processed=processed,
        last_processed_id=processed,
        payload_hash=f"h{processed}",
        counters={"written": processed},
        lease_seconds=30,
    )


def test_checkpoint_pipe_reports_a_lost_lease_before_the_next_write(db: Database) -> None:
    meta = db[METADATA]
    lease = _leased_batch(meta, _job(db))
    # Another worker takes the batch over (its lease bumps the fencing token).
    meta.update_one({"_id": lease.batch_id}, {"$inc": {"fencing_token": 1}})
    with CheckpointPipe() as pipe:
        pipe.submit(_checkpoint, meta, lease, 1)
        with pytest.raises(LeaseLost):
            pipe.settle()
    assert meta.find_one({"_id": lease.batch_id})["processed"] == 0


def test_checkpoint_pipe_never_lets_a_later_checkpoint_overtake(db: Database) -> None:
    meta = db[METADATA]
    lease = _leased_batch(meta, _job(db))
    first_started = threading.Event()

    def slow_first(processed: int) -> bool:
        if processed == 1:
            first_started.set()
            time.sleep(0.3)  # a slow database round trip for the first checkpoint
        return _checkpoint(meta, lease, processed)

    with CheckpointPipe() as pipe:
        pipe.submit(slow_first, 1)
        assert first_started.wait(5)
        pipe.submit(slow_first, 2)  # must wait for the first, not race it
        pipe.settle()
    doc = meta.find_one({"_id": lease.batch_id})
    assert (doc["processed"], doc["payload_hash"]) == (2, "h2")


def test_checkpoint_pipe_raises_the_checkpoint_error_where_it_settles() -> None:
    def failing() -> bool:
        raise pymongo.errors.AutoReconnect("connection closed")

    with CheckpointPipe() as pipe:
        pipe.submit(failing)
        with pytest.raises(pymongo.errors.AutoReconnect):
            pipe.settle()
        pipe.settle()  # the failure is reported once, not again at the next write


class FinishingSender(RecordingSender):
    """A worker fleet that finishes every batch the moment it is sent, and never refills."""

    def __init__(self, meta: Collection, job_id: str) -> None:
        super().__init__()
        self.meta, self.job_id = meta, job_id

    def send_task(self, name: str, args: Any = None, **options: Any) -> None:
        super().send_task(name, args, **options)
        bid = store.batch_id(self.job_id, args[1])
        self.meta.update_one({"_id": bid}, {"$set": {"status": BatchStatus.DONE.value}})


def test_planner_keeps_filling_slots_that_free_up_while_it_plans(db: Database) -> None:
    db[PRODUCTS].insert_many([{"_id": i} for i in range(40)])  # 10 batches of 4
    job_id = _job(db, max_in_flight=2)
    sender = FinishingSender(db[METADATA], job_id)
    plan_job(db, sender, "q", job_id)
    # Cuts are written in groups of 1, 2, 4, then the 3 left (batches 0, 1-2, 3-6, 7-9);
    # the planner fills the free slots after each group but the last, whose fill is the
    # one after planning: 1, then 2 every time, since this fleet finishes each batch at
    # once. Were it to stop topping up once the cap was first reached, only the final
    # fill's 2 batches would have gone out besides the first one.
    sent = sorted(args[1] for _, args in sender.sent)
    assert sent == list(range(7))


@pytest.mark.parametrize("unfinished", ["pending", "queued", "running"])
def test_a_job_is_not_completed_while_a_batch_is_unfinished(db: Database, unfinished: str) -> None:
    meta = db[METADATA]
    job_id = _job(db)
    meta.update_one(
        {"_id": job_id},
        {"$set": {"status": JobStatus.RUNNING.value, "planning.done": True}},
    )
    for no, status in enumerate(["done", unfinished, "done"]):
        meta.insert_one({**store.new_batch(job_id, no, [no]), "status": status})
    assert maybe_complete_job(meta, db[QUARANTINE], job_id) is None
    assert read_job(meta, job_id, ("status",))["status"] == JobStatus.RUNNING.value

    meta.update_many({"job_id": job_id}, {"$set": {"status": "done"}})
    assert maybe_complete_job(meta, db[QUARANTINE], job_id) is JobStatus.COMPLETED


def test_read_job_does_not_take_a_batch_document_for_a_job(db: Database) -> None:
    meta = db[METADATA]
    job_id = _job(db)
    meta.insert_one(store.new_batch(job_id, 0, [1]))
    assert read_job(meta, store.batch_id(job_id, 0)) is None
    assert read_job(meta, job_id, ("status",))["status"] == JobStatus.PLANNING.value


def _runtime(settings: Settings, db: Database) -> Runtime:
    return Runtime(settings, db, redis.Redis.from_url(settings.redis_url or ""))


def test_after_batch_thread_completes_the_job_after_its_last_batch(
    db: Database, settings: Settings
) -> None:
    meta = db[METADATA]
    job_id = _job(db)
    meta.update_one(
        {"_id": job_id}, {"$set": {"status": JobStatus.RUNNING.value, "planning.done": True}}
    )
    meta.insert_one({**store.new_batch(job_id, 0, [1]), "status": "done"})
    blog = BatchLog(logging.getLogger("test"), {"job_id": job_id, "batch_no": 0})
    rt = _runtime(settings, db)
    done = rt.after_batch.submit(after_batch, rt, RecordingSender(), job_id, {}, blog)
    done.result(timeout=30)
    assert read_job(meta, job_id, ("status",))["status"] == JobStatus.COMPLETED.value


def test_after_batch_survives_an_unreachable_database(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    dead = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", serverSelectionTimeoutMS=300
    )
    rt = _runtime(settings, dead["nowhere"])
    blog = BatchLog(logging.getLogger("test"), {"job_id": "j", "batch_no": 0})
    with caplog.at_level(logging.INFO):
        rt.after_batch.submit(after_batch, rt, RecordingSender(), "j", {}, blog).result(30)
    # The batch stays done; the sweeper hands out what this could not.
    assert "dispatching next batches failed" in caplog.text
    assert "done: {} after_s=" in caplog.text


def _wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_lease_keeper_brings_a_pause_and_a_vanished_job_to_the_batch(db: Database) -> None:
    meta = db[METADATA]
    job_id = _job(db)
    lease = _leased_batch(meta, job_id)
    keeper = LeaseKeeper(meta, lease, 30, job_id=job_id, job_state="running", recheck_seconds=0.05)
    with keeper:
        meta.update_one({"_id": job_id}, {"$set": {"status": JobStatus.PAUSED.value}})
        assert _wait_for(lambda: keeper.job_state == JobStatus.PAUSED.value)
        meta.delete_one({"_id": job_id})
        assert _wait_for(lambda: keeper.job_state == JobStatus.CANCELLED.value)
    assert not keeper.lost.is_set()


def test_lease_keeper_brings_a_changed_cap_to_the_batch(db: Database) -> None:
    # A finishing batch hands its slot on under the cap the keeper last read
    # (backfill_engine.handoff): a `set --max-in-flight` must reach it within a recheck.
    meta = db[METADATA]
    job_id = _job(db)
    lease = _leased_batch(meta, job_id)
    keeper = LeaseKeeper(
        meta, lease, 30, job_id=job_id, job_state="running", job_cap=4, recheck_seconds=0.05
    )
    assert keeper.job_cap == 4
    with keeper:
        meta.update_one({"_id": job_id}, {"$set": {"max_in_flight": 1}})
        assert _wait_for(lambda: keeper.job_cap == 1)
        meta.delete_one({"_id": job_id})
        assert _wait_for(lambda: keeper.job_cap is None)


def test_lease_keeper_notices_a_lease_taken_over(db: Database) -> None:
    meta = db[METADATA]
    job_id = _job(db)
    lease = _leased_batch(meta, job_id)
    meta.update_one({"_id": lease.batch_id}, {"$inc": {"fencing_token": 1}})
    with LeaseKeeper(meta, lease, 0.3, job_id=job_id, job_state="running") as keeper:
        assert keeper.lost.wait(20)
