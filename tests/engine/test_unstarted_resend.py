"""A delivery that cannot start (the job's read or the lease fails, or the lease's answer is
lost) hands the batch back and re-sends it itself: no sweeper pass may take it for lost or
for an expired lease.

In-process batch runs on the real SecantusDB and Redis; the failpoint (`failCommand`) hits
only the batch runtime's own client, by its appName.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pymongo
import pymongo.errors
import pytest
import redis
from pymongo.collection import Collection
from pymongo.database import Database

from backfill_engine import store
from backfill_engine.batch_outcome import BatchOutcome
from backfill_engine.batch_run import process_batch
from backfill_engine.runtime import Runtime, build_runtime
from backfill_engine.schema import ensure_schema
from backfill_engine.settings import Settings
from backfill_engine.states import METADATA
from backfill_engine.store import batch_id
from backfill_engine.sweeper import sweep_job
from tests.engine.test_failing_hooks import DOUBLING, _job
from tests.orchestrator.test_planner import RecordingSender

WORKER_APP = "unstarted-resend-worker"
BUILT_WORKER_APP = "mongo-backfill-worker"  # the appName build_runtime gives its client
NETWORK_TIMEOUT = 89


@pytest.fixture
def rt(mongo_client: pymongo.MongoClient, settings: Settings) -> Iterator[Runtime]:
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url, appname=WORKER_APP, retryReads=False
    )
    yield Runtime(
        settings,
        client[settings.mongo_db],
        redis.Redis.from_url(settings.redis_url or ""),
        {DOUBLING.name: DOUBLING},
    )
    mongo_client.admin.command("configureFailPoint", "failCommand", mode="off")
    client.close()


def _fail_finds(
    mongo_client: pymongo.MongoClient,
    mode: Any,
    app: str = WORKER_APP,
    commands: tuple[str, ...] = ("find",),
) -> None:
    mongo_client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode=mode,
        data={"failCommands": list(commands), "appName": app, "errorCode": NETWORK_TIMEOUT},
    )


class LeaseAnswerLost:
    """A batch collection whose findAndModify is applied by the server, its answer lost."""

    def __init__(self, coll: Collection) -> None:
        self.coll = coll

    def find_one_and_update(self, *args: Any, **kwargs: Any) -> Any:
        self.coll.find_one_and_update(*args, **kwargs)
        raise pymongo.errors.AutoReconnect("connection closed before the answer")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.coll, name)


def _job_dispatched_long_ago(rt: Runtime, db: Database) -> tuple[str, str]:
    """A job whose first batch waited its turn in the broker a while before this delivery."""
    job_id = _job(rt, DOUBLING, 6)
    bid = batch_id(job_id, 0)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    db[METADATA].update_one({"_id": bid}, {"$set": {"dispatched_at": long_ago}})
    return job_id, bid


def _sweep(db: Database, settings: Settings, job_id: str) -> tuple[int, int]:
    report = sweep_job(db, RecordingSender(), settings.queue, job_id, redispatch_seconds=5.0)
    return report.expired_leases, report.resent


def test_a_failed_job_read_resends_the_batch_and_no_sweep_takes_it_for_lost(
    rt: Runtime, db: Database, settings: Settings, mongo_client: pymongo.MongoClient
) -> None:
    job_id, bid = _job_dispatched_long_ago(rt, db)
    ensure_schema(rt.db)  # once per process: so the first find the delivery sends is the job's
    _fail_finds(mongo_client, {"times": 2}, commands=("find",))
    sender = RecordingSender()

    assert process_batch(rt, sender, job_id, 0, "w") is BatchOutcome.RETRY

    assert sender.sent == [("backfill.batch", [job_id, 0])]  # re-sent by the worker itself
    batch = db[METADATA].find_one({"_id": bid}) or {}
    assert batch["status"] == "queued" and batch["attempts"] == 0
    # The re-sent message is on its way (held back for a moment): not lost.
    assert _sweep(db, settings, job_id) == (0, 0)


def test_a_failed_lease_command_resends_the_batch_unleased(
    rt: Runtime, db: Database, settings: Settings, mongo_client: pymongo.MongoClient
) -> None:
    job_id, bid = _job_dispatched_long_ago(rt, db)
    _fail_finds(mongo_client, {"times": 2}, commands=("findAndModify",))
    sender = RecordingSender()

    assert process_batch(rt, sender, job_id, 0, "w") is BatchOutcome.RETRY

    assert sender.sent == [("backfill.batch", [job_id, 0])]
    batch = db[METADATA].find_one({"_id": bid}) or {}
    assert batch["status"] == "queued" and batch["lease_owner"] is None
    assert batch["attempts"] == 0
    assert _sweep(db, settings, job_id) == (0, 0)


def test_a_lease_whose_answer_is_lost_is_handed_back(rt: Runtime, db: Database) -> None:
    job_id, bid = _job_dispatched_long_ago(rt, db)
    # The server took the lease but its answer never came: our token is unknown, so the
    # lease goes back rather than be left to expire into a sweeper's pass.
    with pytest.raises(pymongo.errors.AutoReconnect):
        store.lease_batch(LeaseAnswerLost(db[METADATA]), bid, "w", 60)  # type: ignore[arg-type]
    batch = db[METADATA].find_one({"_id": bid}) or {}
    assert batch["status"] == "queued" and batch["lease_owner"] is None
    assert batch["attempts"] == 0  # a delivery that never started is no attempt
    db[METADATA].update_one({"_id": bid}, {"$set": {"dispatched_at": dt.datetime.now(dt.UTC)}})
    assert process_batch(rt, RecordingSender(), job_id, 0, "w") is BatchOutcome.DONE
    assert db[METADATA].find_one({"_id": bid})["attempts"] == 1


def test_a_batch_left_to_workers_that_know_its_backfill_is_not_taken_for_lost(
    rt: Runtime, db: Database, settings: Settings
) -> None:
    job_id, bid = _job_dispatched_long_ago(rt, db)
    stranger = Runtime(settings, rt.db, rt.redis, {})  # knows no backfill
    sender = RecordingSender()

    assert process_batch(stranger, sender, job_id, 0, "w") is BatchOutcome.UNKNOWN_BACKFILL

    assert sender.sent == [("backfill.batch", [job_id, 0])]
    assert db[METADATA].find_one({"_id": bid})["status"] == "queued"
    assert _sweep(db, settings, job_id) == (0, 0)


def test_a_new_worker_process_whose_schema_check_fails_resends_its_first_batch(
    rt: Runtime, db: Database, settings: Settings, mongo_client: pymongo.MongoClient
) -> None:
    # A pool child builds its runtime on its first delivery and checks the schema once.
    # When that read failed, the task raised and its message was acked away: the batch
    # sat queued until a sweeper took it for a lost message (test_mongo_faults[5b]).
    job_id, bid = _job_dispatched_long_ago(rt, db)
    # Twice: the worker's client retries a failed read once by itself.
    _fail_finds(mongo_client, {"times": 2}, app=BUILT_WORKER_APP)
    fresh = build_runtime(settings, {DOUBLING.name: DOUBLING})
    sender = RecordingSender()
    try:
        assert process_batch(fresh, sender, job_id, 0, "w") is BatchOutcome.RETRY

        assert sender.sent == [("backfill.batch", [job_id, 0])]  # re-sent by the delivery
        assert (db[METADATA].find_one({"_id": bid}) or {})["status"] == "queued"
        assert _sweep(db, settings, job_id) == (0, 0)
        # The check is made again by the next delivery, and passes.
        assert process_batch(fresh, RecordingSender(), job_id, 0, "w") is BatchOutcome.DONE
    finally:
        fresh.db.client.close()
