"""One job whose planning always fails stops no sweep: each job is swept on its own.

Real SecantusDB and Redis, no worker processes: the sweep a worker's thread runs
(`backfill_workers.autosweep.sweep_once`) is called directly, over a job stuck in `planning` and
a running job whose batch lease expired.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import redis
from pymongo.database import Database
from rich.console import Console

from backfill_engine import store
from backfill_engine.notify import NOTIFICATIONS
from backfill_engine.planner import start_or_join
from backfill_engine.settings import Settings
from backfill_engine.states import METADATA, BatchStatus, JobStatus
from backfill_engine.sweeper import SweepFailures, sweep_jobs
from backfill_workers.autosweep import sweep_lock_key, sweep_once
from migrations.versions._catalog import PRODUCTS
from orchestrator.jobs import summarize
from orchestrator.progress import summary_table
from tests.orchestrator.test_planner import RecordingSender


def _job(db: Database, key: str, **kw: Any) -> str:
    job, created = start_or_join(
        db,
        backfill="catalog",
        exclusive_key=key,
        collection=PRODUCTS,
        batch_size=2,
        max_in_flight=2,
        rate_per_second=10,
        **kw,
    )
    assert created
    return str(job["_id"])


def _running_job_with_an_expired_lease(db: Database) -> str:
    meta = db[METADATA]
    job_id = _job(db, "catalog:healthy")
    meta.update_one({"_id": job_id}, {"$set": {"status": "running", "planning.done": True}})
    meta.insert_one(store.new_batch(job_id, 0, [1, 2]))
    # A worker took the batch and died: its lease runs out and nobody renews it.
    assert store.lease_batch(meta, store.batch_id(job_id, 0), "dead-worker", 0.001)
    time.sleep(0.01)
    return job_id


def _sweep(db: Database, rds: redis.Redis, settings: Settings, sender: RecordingSender) -> int:
    rds.delete(sweep_lock_key(settings.queue))  # as if the sweep interval had passed
    return sweep_once(db, rds, sender, settings)


def test_a_job_whose_filter_the_server_rejects_fails_and_the_others_are_swept(
    db: Database, redis_client: redis.Redis, settings: Settings
) -> None:
    db[PRODUCTS].insert_many([{"_id": i, "name": f"n{i}"} for i in range(6)])
    # Inserted as the engine's API would, past the CLI's check of the filter: the first
    # job the sweep meets, its planning raises on every pass.
    bad = _job(db, "catalog:slice:bad", scope={"name": {"$regex": "("}})
    healthy = _running_job_with_an_expired_lease(db)
    sender = RecordingSender()

    _sweep(db, redis_client, settings, sender)

    meta = db[METADATA]
    batch = meta.find_one({"_id": store.batch_id(healthy, 0)})
    assert batch is not None
    assert batch["status"] == BatchStatus.QUEUED.value, "the expired lease was not requeued"
    assert [args[:2] for _, args in sender.sent] == [[healthy, 0]]
    job = meta.find_one({"_id": bad})
    assert job is not None and job["status"] == JobStatus.FAILED.value
    assert "regular expression is invalid" in job["fail_reason"].lower(), job["fail_reason"]
    assert "active_key" not in job, "a failed job must not block the next run"
    notice = db[NOTIFICATIONS].find_one({"job_id": bad, "event": "failed"})
    assert notice is not None and notice["reason"] == job["fail_reason"]
    assert meta.count_documents({"job_id": bad}) == 0, "a batch was cut for the bad job"
    console = Console(width=200, record=True)
    console.print(summary_table(summarize(db, bad)))
    assert "regular expression is invalid" in console.export_text().lower(), "status says why"

    # Failed for good: the next sweeps leave it alone.
    _sweep(db, redis_client, settings, sender)
    assert meta.find_one({"_id": bad}, {"status": 1}) == {"_id": bad, "status": "failed"}
    assert db[NOTIFICATIONS].count_documents({"job_id": bad}) == 1


def test_a_job_with_an_embedded_document_id_fails_and_the_others_are_swept(
    db: Database, redis_client: redis.Redis, settings: Settings
) -> None:
    db[PRODUCTS].insert_many([{"_id": i} for i in range(5)] + [{"_id": {"region": "eu"}}])
    bad = _job(db, "catalog:slice:bad")
    healthy = _running_job_with_an_expired_lease(db)
    sender = RecordingSender()

    _sweep(db, redis_client, settings, sender)

    meta = db[METADATA]
    assert meta.find_one({"_id": store.batch_id(healthy, 0)})["status"] == "queued"
    job = meta.find_one({"_id": bad})
    assert job is not None and job["status"] == JobStatus.FAILED.value
    assert "_id of type embedded document" in job["fail_reason"]
    assert db[NOTIFICATIONS].count_documents({"job_id": bad, "event": "failed"}) == 1


def test_a_job_that_keeps_raising_is_logged_once_and_left_as_it_is(
    db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    meta = db[METADATA]
    # A job document no planner can use (an empty collection name): not a reason to fail it
    # on our own, but no reason to stop sweeping the others either.
    broken = _job(db, "catalog:slice:broken")
    meta.update_one({"_id": broken}, {"$set": {"collection": ""}})
    healthy = _running_job_with_an_expired_lease(db)
    failures = SweepFailures()
    sender = RecordingSender()
    with caplog.at_level(logging.WARNING, logger="backfill_engine.sweeper"):
        for _ in range(3):
            sweep_jobs(
                db,
                sender,
                settings.queue,
                redispatch_seconds=settings.redispatch_seconds,
                failures=failures,
            )
    assert meta.find_one({"_id": store.batch_id(healthy, 0)})["status"] == "queued"
    assert meta.find_one({"_id": broken})["status"] == JobStatus.PLANNING.value
    mentions = [r for r in caplog.records if broken in r.getMessage()]
    assert len(mentions) == 1, [r.getMessage() for r in mentions]


def test_a_waiting_command_sweeps_only_when_no_worker_swept_this_interval(
    db: Database, redis_client: redis.Redis, settings: Settings
) -> None:
    from orchestrator.commands import Broker, wait_for

    job_id = _running_job_with_an_expired_lease(db)
    sender = RecordingSender()
    broker = Broker(sender=sender, redis=redis_client, queue=settings.queue)
    bid = store.batch_id(job_id, 0)
    # A worker swept this queue moments ago (it holds the interval's turn): the waiting
    # command leaves the expired lease to the workers' next sweep.
    redis_client.set(sweep_lock_key(settings.queue), "worker", px=60_000)
    wait_for(db, broker, settings, job_id, timeout=0)
    assert db[METADATA].find_one({"_id": bid})["status"] == BatchStatus.RUNNING.value
    assert sender.sent == []
    # No worker swept (none alive): the waiting command sweeps its job itself.
    redis_client.delete(sweep_lock_key(settings.queue))
    wait_for(db, broker, settings, job_id, timeout=0)
    assert db[METADATA].find_one({"_id": bid})["status"] == BatchStatus.QUEUED.value
    assert [args[:2] for _, args in sender.sent] == [[job_id, 0]]


def test_a_waiting_command_builds_the_summary_only_when_its_progress_is_due(
    db: Database, redis_client: redis.Redis, settings: Settings
) -> None:
    import pymongo
    from pymongo import monitoring

    from orchestrator.commands import Broker, wait_for

    class Aggregates(monitoring.CommandListener):
        def __init__(self) -> None:
            self.seen = 0

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            self.seen += event.command_name == "aggregate"

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    job_id = _running_job_with_an_expired_lease(db)
    # A worker holds this interval's sweep, so the polls do nothing but read the job.
    redis_client.set(sweep_lock_key(settings.queue), "worker", px=60_000)
    broker = Broker(sender=RecordingSender(), redis=redis_client, queue=settings.queue)
    listener = Aggregates()
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url, event_listeners=[listener]
    )
    ticks: list[int] = []
    try:
        # About three polls, a second apart, with progress due once a minute: the summary
        # (an aggregation over every batch of the job) is built for the first poll's
        # progress and the return, not for every poll.
        summary = wait_for(
            client[settings.mongo_db],
            broker,
            settings,
            job_id,
            on_tick=lambda s: ticks.append(s.batches.get("running", 0)),
            tick_seconds=60.0,
            timeout=2.5,
        )
    finally:
        client.close()
    assert ticks == [1]
    assert summary.batches.get("running") == 1
    # Two summaries (the batch counts and the quarantine count, an aggregate each), not one
    # per poll.
    assert listener.seen == 4, listener.seen
