"""Which planning errors fail a job: a rejected scope does, a passing server error does not.

Real SecantusDB with failpoints (`failCommand`): the planner's own client is the only one
the failpoint hits (by its appName).
"""

from __future__ import annotations

from collections.abc import Iterator

import pymongo
import pymongo.errors
import pytest
from pymongo.database import Database

from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.scope import ScopeError, check_filter, is_transient
from backfill_engine.settings import Settings
from backfill_engine.states import METADATA, JobStatus
from migrations.versions._catalog import PRODUCTS
from tests.orchestrator.test_planner import RecordingSender

PLANNER_APP = "planning-errors-test"
MAX_TIME_MS_EXPIRED = 50  # the server gave up on the query in time: nothing wrong with it


@pytest.fixture
def planner_db(mongo_client: pymongo.MongoClient, settings: Settings) -> Iterator[Database]:
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url, appname=PLANNER_APP, serverSelectionTimeoutMS=5000
    )
    yield client[settings.mongo_db]
    mongo_client.admin.command("configureFailPoint", "failCommand", mode="off")
    client.close()


def test_a_passing_server_error_leaves_the_job_to_the_next_planner(
    db: Database, planner_db: Database, mongo_client: pymongo.MongoClient
) -> None:
    db[PRODUCTS].insert_many([{"_id": i, "name": f"n{i}"} for i in range(6)])
    job, _ = start_or_join(
        db,
        backfill="catalog",
        collection=PRODUCTS,
        batch_size=2,
        max_in_flight=2,
        rate_per_second=10,
        scope={"name": {"$regex": "^n"}},
    )
    job_id = str(job["_id"])
    # Past its first read of the job, every read the planner makes fails for a while:
    # its reads of the collection, and the check of the scope that follows the error.
    mongo_client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"skip": 1},
        data={"failCommands": ["find"], "appName": PLANNER_APP, "errorCode": MAX_TIME_MS_EXPIRED},
    )
    with pytest.raises(pymongo.errors.OperationFailure) as exc:
        plan_job(planner_db, RecordingSender(), "q", job_id)
    assert is_transient(exc.value)
    mongo_client.admin.command("configureFailPoint", "failCommand", mode="off")
    assert db[METADATA].find_one({"_id": job_id})["status"] == JobStatus.PLANNING.value
    assert plan_job(planner_db, RecordingSender(), "q", job_id)
    assert db[METADATA].find_one({"_id": job_id})["planning"]["items"] == 6


def test_the_server_check_of_a_filter_names_what_it_rejects(db: Database) -> None:
    check_filter(db[PRODUCTS], {"name": {"$regex": "^n"}})  # an empty collection is no excuse
    with pytest.raises(ScopeError) as exc:
        check_filter(db[PRODUCTS], {"name": {"$regex": "("}})
    assert str(exc.value).startswith("--filter is rejected by the server: Regular expression")


def test_an_uncarried_id_outside_the_scope_does_not_fail_the_job(db: Database) -> None:
    db[PRODUCTS].insert_many(
        [{"_id": i, "name": f"n{i}"} for i in range(6)] + [{"_id": {"k": 1}, "name": "other"}]
    )
    job, _ = start_or_join(
        db,
        backfill="catalog",
        collection=PRODUCTS,
        batch_size=2,
        max_in_flight=2,
        rate_per_second=10,
        scope={"name": {"$regex": "^n"}},
    )
    assert plan_job(db, RecordingSender(), "q", str(job["_id"]))
    planned = db[METADATA].find_one({"_id": job["_id"]})
    assert planned["status"] == JobStatus.RUNNING.value and planned["planning"]["items"] == 6
