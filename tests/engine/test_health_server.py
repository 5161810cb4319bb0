"""The health gate against the session's SecantusDB: real replSetGetStatus, real slow writes.

Write latency is injected with failCommand + blockConnection, filtered to the workers'
appName, exactly as a loaded primary would slow the workers' updates.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pymongo
import pytest
from pymongo import UpdateOne
from pymongo.database import Database

from backfill_engine.health import HealthGate, majority_lag_seconds
from backfill_engine.settings import Settings
from backfill_engine.states import METADATA
from migrations.versions._catalog import PRODUCTS

WORKER_APP_NAME = "mongo-backfill-worker"
BLOCK_MS = 300
JOB = "health-job"


@dataclass
class Keeper:
    """What a running batch's LeaseKeeper tells the gate: lease held, job state."""

    job_state: str = "running"
    lost: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def worker_db(settings: Settings, db: Database) -> Iterator[Database]:
    """The test's database through a client named like a worker's (the failpoint's filter)."""
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url, appname=WORKER_APP_NAME, serverSelectionTimeoutMS=5000
    )
    db[METADATA].insert_one({"_id": JOB, "kind": "job", "status": "running"})
    db[PRODUCTS].insert_many([{"_id": i} for i in range(10)])
    yield client[db.name]
    client.close()


@pytest.fixture
def slow_updates(mongo_client: pymongo.MongoClient) -> Iterator[pymongo.MongoClient]:
    """Every update of a worker-named client blocked BLOCK_MS until the test turns it off."""
    mongo_client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {
                "failCommands": ["update"],
                "blockConnection": True,
                "blockTimeMS": BLOCK_MS,
                "appName": WORKER_APP_NAME,
            },
        }
    )
    try:
        yield mongo_client
    finally:
        mongo_client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def test_one_member_replica_set_has_no_lag_and_is_not_throttled(
    worker_db: Database, settings: Settings
) -> None:
    status = worker_db.client.admin.command("replSetGetStatus")
    assert len(status["members"]) == 1
    assert majority_lag_seconds(status) == 0.0
    # Even the strictest lag limit holds nothing back on a one-member set.
    gate = HealthGate(worker_db, replace(settings, max_replication_lag_seconds=0.001))
    assert gate.verdict() is None
    assert gate.hold(JOB, Keeper()) == 0.0
    assert "throttle" not in (worker_db[METADATA].find_one({"_id": JOB}) or {})


def _slow_writes(gate: HealthGate, db: Database, n: int) -> None:
    for k in range(n):
        with gate.timed_write():
            db[PRODUCTS].bulk_write([UpdateOne({"_id": k}, {"$set": {"x": k}})], ordered=False)


def test_slow_writes_hold_record_the_reason_and_release_once_probes_are_fast(
    worker_db: Database, settings: Settings, slow_updates: pymongo.MongoClient
) -> None:
    gate = HealthGate(worker_db, replace(settings, max_write_latency_ms=100))
    _slow_writes(gate, worker_db, 5)
    verdict = gate.verdict()
    assert verdict is not None and verdict.reason.startswith("write p95 ")
    assert verdict.reason.endswith(" ms > 100 ms")

    # Probes keep finding slow updates: held until MAX_HOLD_SECONDS lets one sub-chunk by.
    assert gate.hold(JOB, Keeper()) > 0
    assert gate.verdict() is not None
    held = (worker_db[METADATA].find_one({"_id": JOB}) or {})["throttle"]
    assert held["kind"] == "write_latency" and held["until"] is None
    assert held["reason"].startswith("write p95 ") and held["worker"] == gate.worker

    slow_updates.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    # No product write happens while held: the probes alone see the recovery.
    assert gate.hold(JOB, Keeper()) > 0
    assert gate.verdict() is None
    released = (worker_db[METADATA].find_one({"_id": JOB}) or {})["throttle"]
    assert released["until"] is not None and released["since"] == held["since"]


def test_a_paused_cancelled_or_lost_batch_stops_holding_at_once(
    worker_db: Database, settings: Settings, slow_updates: pymongo.MongoClient
) -> None:
    gate = HealthGate(worker_db, replace(settings, max_write_latency_ms=100))
    _slow_writes(gate, worker_db, 5)
    lost = Keeper()
    lost.lost.set()
    for keeper in (Keeper(job_state="paused"), Keeper(job_state="cancelled"), lost):
        gate.hold(JOB, keeper)  # returns: the batch's own checks then stop it
    assert gate.verdict() is not None  # still strained: the next running batch would wait
    # Nobody held on behalf of a stopped batch, so nothing claims the job is held back.
    assert "throttle" not in (worker_db[METADATA].find_one({"_id": JOB}) or {})
