"""Reliability, round two, at the engine's seams: real MongoDB and Redis, no worker processes.

The fault scenarios in tests/faults/ show the same holes closed with real workers; these pin
each guard where it lives.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import kombu.exceptions
import pymongo
import pytest
import redis
from bson import ObjectId
from pymongo.database import Database

from backfill_engine import clock, store
from backfill_engine.batch_outcome import BatchOutcome
from backfill_engine.batch_run import process_batch
from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.runtime import build_runtime
from backfill_engine.settings import Settings
from backfill_engine.states import BATCH_IDS, METADATA, QUARANTINE, BatchStatus, JobStatus
from backfill_workers.app import create_app
from backfill_workers.autosweep import AutoSweeper, sweep_once
from migrations.versions._catalog import PRODUCTS
from orchestrator.stack import free_port
from tests.harness import System
from tests.orchestrator.test_planner import RecordingSender


@pytest.fixture
def meta_db(db: Database, settings: Settings) -> Database:
    from backfill_migrations import runner
    from tests.harness import METADATA_VERSION

    runner.up(
        db, runner.RunnerConfig.from_settings(settings, log=lambda _m: None), to=METADATA_VERSION
    )
    return db


def _job(db: Database, **kw: Any) -> str:
    job, _ = start_or_join(
        db,
        backfill="catalog",
        collection="products",
        batch_size=kw.get("batch_size", 4),
        max_in_flight=2,
        rate_per_second=10,
    )
    return str(job["_id"])


def test_planner_flags_ids_a_string_keyed_source_cannot_tell_apart(meta_db: Database) -> None:
    oid = ObjectId()
    ids: list[Any] = [5, "5", oid, str(oid), "plain", 6, "sku-9"]
    meta_db[PRODUCTS].insert_many([{"_id": i} for i in ids])
    job_id = _job(meta_db, batch_size=3)
    assert plan_job(meta_db, RecordingSender(), "q", job_id)
    flagged = [
        i for d in meta_db[BATCH_IDS].find({"job_id": job_id}) for i in d.get("ambiguous", [])
    ]
    assert sorted(map(repr, flagged)) == sorted(map(repr, [5, "5", oid, str(oid)]))


def test_sweeper_guard_keeps_a_lease_renewed_after_its_find(meta_db: Database) -> None:
    meta = meta_db[METADATA]
    job_id = _job(meta_db)
    meta.insert_one(store.new_batch(job_id, 0, [1, 2]))
    bid = store.batch_id(job_id, 0)
    taken = store.lease_batch(meta, bid, "worker-a", 0.001)
    assert taken is not None
    lease, doc = taken
    time.sleep(0.01)
    before = store.now_utc()
    # The sweeper found the lease expired ... and before it updates, the worker renews.
    assert store.renew_lease(meta, lease, 60)
    expected = {
        "status": BatchStatus.RUNNING.value,
        "fencing_token": doc["fencing_token"],
        "lease_expires_at": {"$lt": before},
    }
    assert not store.requeue_stale(meta, bid, expected)
    assert meta.find_one({"_id": bid})["lease_owner"] == "worker-a"


def test_clock_follows_the_server_not_a_host_running_ahead(
    mongo_client: pymongo.MongoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 600)  # this host is 10 min ahead
    clock.attach(mongo_client)
    try:
        server = mongo_client.admin.command("hello")["localTime"].timestamp()
        assert abs(clock.now().timestamp() - server) < 5  # not 600
        assert clock.offset_seconds() < -590
    finally:
        monkeypatch.undo()
        clock.attach(mongo_client)
        clock.now()


def test_a_wall_clock_step_does_not_move_server_time(
    mongo_client: pymongo.MongoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.attach(mongo_client)
    clock.now()  # measured against the host as it is
    real_time = time.time
    # A VM resumed or an NTP step: the wall clock jumps a lease and more, before any refresh.
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    try:
        server = mongo_client.admin.command("hello")["localTime"].timestamp()
        assert abs(clock.now().timestamp() - server) < 5  # not 3600
    finally:
        monkeypatch.undo()
        clock.attach(mongo_client)
        clock.now()


def test_a_batch_leased_past_max_attempts_fails_and_says_why(system: System) -> None:
    db, s = system.db, replace(system.settings, max_attempts=2)
    meta = db[METADATA]
    db[PRODUCTS].insert_many([{"_id": i} for i in range(3)])
    job_id = _job(db)
    meta.update_one({"_id": job_id}, {"$set": {"status": "running", "planning.done": True}})
    meta.insert_one({**store.new_batch(job_id, 0, [0, 1, 2]), "attempts": 2})
    db[BATCH_IDS].insert_one(store.batch_ids_doc(job_id, 0, [0, 1, 2]))
    # Two earlier leases whose worker died mid-batch; this is the third.
    outcome = process_batch(build_runtime(s), RecordingSender(), job_id, 0, "w")
    batch = meta.find_one({"_id": store.batch_id(job_id, 0)})
    assert outcome is BatchOutcome.FAILED
    assert batch["status"] == BatchStatus.FAILED.value
    assert "leased 2 times without finishing" in batch["last_error"]
    assert meta.find_one({"_id": job_id})["status"] == JobStatus.COMPLETED_WITH_ERRORS.value


def test_a_pause_hand_back_is_not_a_failed_attempt(meta_db: Database) -> None:
    meta = meta_db[METADATA]
    job_id = _job(meta_db)
    meta.insert_one(store.new_batch(job_id, 0, [1]))
    bid = store.batch_id(job_id, 0)
    for _ in range(3):
        taken = store.lease_batch(meta, bid, "w", 30)
        assert taken is not None
        assert store.release_batch(meta, taken[0], BatchStatus.PENDING)
    assert meta.find_one({"_id": bid})["attempts"] == 0


def test_ambiguous_ids_are_quarantined_and_never_written(system: System) -> None:
    oid = ObjectId()
    system.db[PRODUCTS].insert_many([{"_id": i} for i in (5, "5", oid, str(oid), 7, 8)])
    system.start_workers()
    job_id = system.launch()
    summary = system.wait(job_id)
    held = {d["item_id"]: d for d in system.db[QUARANTINE].find({"job_id": job_id})}
    assert {repr(k) for k in held} == {repr(v) for v in (5, "5", oid, str(oid))}
    assert all(d["reason"] == "ambiguous" for d in held.values())
    written = {d["_id"] for d in system.db[PRODUCTS].find({"catalog_synced_at": {"$exists": True}})}
    assert written == {7, 8}
    assert summary.job["status"] == JobStatus.COMPLETED_WITH_ERRORS.value


def test_worker_sweeper_outlives_a_broker_outage(
    meta_db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    meta = meta_db[METADATA]
    job_id = _job(meta_db)
    meta.update_one({"_id": job_id}, {"$set": {"status": "running", "planning.done": True}})
    meta.insert_one(store.new_batch(job_id, 0, [1]))
    dead = replace(
        settings, redis_url=f"redis://127.0.0.1:{free_port()}/0", sweep_interval_seconds=1
    )
    sender = create_app(dead)
    sender.conf.broker_connection_timeout = 0.5
    sender.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0}
    lock = redis.Redis.from_url(settings.redis_url or "")
    # The broker being down reaches the sweeper as kombu's error, not as a RedisError.
    with pytest.raises(kombu.exceptions.OperationalError):
        sweep_once(meta_db, lock, sender, dead)
    lock.delete(f"backfill:sweep:{dead.queue}")
    sweeper = AutoSweeper(replace(dead, redis_url=settings.redis_url), sender)
    with caplog.at_level(logging.WARNING, logger="backfill_workers.autosweep"):
        sweeper.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "sweep skipped" not in caplog.text:
            time.sleep(0.2)
        time.sleep(2.5)  # at least one more tick after the first failure
        alive = sweeper._thread.is_alive()
        sweeper.stop()
    assert "sweep skipped" in caplog.text
    assert alive
    assert caplog.text.count("sweep skipped") == 1  # logged once per outage, not every tick


def test_a_write_skips_the_lease_round_trip_only_while_the_lease_surely_holds(
    meta_db: Database,
) -> None:
    from backfill_engine.lease_keeper import LeaseKeeper, write_margin

    meta = meta_db[METADATA]
    job_id = _job(meta_db)
    meta.insert_one(store.new_batch(job_id, 0, [1]))
    taken = store.lease_batch(meta, store.batch_id(job_id, 0), "w", 60)
    assert taken is not None
    fresh = LeaseKeeper(meta, taken[0], 60, job_id=job_id, job_state="running")
    assert fresh.surely_ours(write_margin(60))
    # Leased 45 s ago and not renewed since (a stalled link): 15 s left is too little.
    stale = LeaseKeeper(
        meta, taken[0], 60, job_id=job_id, job_state="running", leased_at=time.monotonic() - 45
    )
    assert not stale.surely_ours(write_margin(60))
    stale.extended(time.monotonic())  # a renewal that went through
    assert stale.surely_ours(write_margin(60))
    stale.lost.set()
    assert not stale.surely_ours(write_margin(60))
    # A short lease (as in the fault tests) is always proven before a write.
    assert not LeaseKeeper(meta, taken[0], 3, job_id=job_id, job_state="running").surely_ours(
        write_margin(3)
    )


def test_the_twin_query_runs_only_when_the_collection_mixes_id_types(meta_db: Database) -> None:
    from backfill_engine.planner import mixes_id_types

    coll = meta_db["only_oids"]
    coll.insert_many([{"_id": ObjectId()} for _ in range(5)])
    assert not mixes_id_types(coll)
    coll.insert_one({"_id": "65f0c0ffee0000000000abcd"})
    assert mixes_id_types(coll)
    assert not mixes_id_types(meta_db["empty"])
