"""Planning: resumable, never duplicates a batch, never misses an id (whatever the _id types)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson.objectid import ObjectId
from pymongo.database import Database

from backfill_engine.planner import after_cursor, plan_job, start_or_join
from backfill_engine.states import BATCH_IDS, METADATA
from backfill_engine.store import load_batch_ids
from migrations.versions._catalog import PRODUCTS
from orchestrator.errors import BackfillError


class RecordingSender:
    """Collects task messages instead of publishing them (planning is what is under test here)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def send_task(self, name: str, args: Any = None, **options: Any) -> None:
        self.sent.append((name, args))


# Every _id type a batch can carry, in BSON sort order's groups.
PLANNABLE_IDS: list[Any] = [
    3,
    1.5,
    7,
    "a",
    "b",
    ObjectId(),
    ObjectId(),
    dt.datetime(2024, 1, 1),
    *range(100, 130),
]
MIXED_IDS: list[Any] = [*PLANNABLE_IDS, {"k": 1}]  # an embedded document sorts among them


def _seed(db: Database, ids: list[Any]) -> None:
    db[PRODUCTS].insert_many([{"_id": i} for i in ids])


def test_after_cursor_reaches_every_later_type(db: Database) -> None:
    _seed(db, MIXED_IDS)
    all_sorted = [d["_id"] for d in db[PRODUCTS].find({}, {"_id": 1}).sort("_id", 1)]
    for k, cursor in enumerate(all_sorted):
        after = [
            d["_id"] for d in db[PRODUCTS].find(after_cursor(cursor), {"_id": 1}).sort("_id", 1)
        ]
        assert after == all_sorted[k + 1 :], f"resume after {cursor!r}"


def _job(db: Database, batch_size: int = 4) -> str:
    job, created = start_or_join(
        db,
        backfill="catalog",
        collection="products",
        batch_size=batch_size,
        max_in_flight=2,
        rate_per_second=10,
    )
    assert created
    return str(job["_id"])


def test_interrupted_planning_resumes_without_duplicates_or_gaps(db: Database) -> None:
    _seed(db, PLANNABLE_IDS)
    job_id = _job(db)
    sender = RecordingSender()
    plan_job(db, sender, "q", job_id, stop_after=3)  # the planner "dies" after 3 batches
    # Simulate a crash after the batch insert but before the cursor update.
    db[METADATA].update_one({"_id": job_id}, {"$set": {"planning.cursor": None, "planner": None}})
    plan_job(db, sender, "q", job_id)
    batches = list(db[METADATA].find({"kind": "batch", "job_id": job_id}).sort("batch_no", 1))
    planned = [i for b in batches for i in load_batch_ids(db[BATCH_IDS], b["_id"])]
    expected = [d["_id"] for d in db[PRODUCTS].find({}, {"_id": 1}).sort("_id", 1)]
    assert planned == expected
    assert [b["batch_no"] for b in batches] == list(range(len(batches)))
    job = db[METADATA].find_one({"_id": job_id})
    assert job["planning"]["done"] and job["planning"]["items"] == len(expected)
    assert job["status"] == "running"


def test_dispatch_never_exceeds_max_in_flight(db: Database) -> None:
    _seed(db, list(range(40)))
    job_id = _job(db)
    sender = RecordingSender()
    plan_job(db, sender, "q", job_id)
    assert len(sender.sent) == 2  # max_in_flight=2, nobody finished a batch
    assert db[METADATA].count_documents({"job_id": job_id, "status": "queued"}) == 2


def test_second_run_joins_the_active_job(db: Database) -> None:
    job_id = _job(db)
    job, created = start_or_join(
        db,
        backfill="catalog",
        collection="products",
        batch_size=4,
        max_in_flight=2,
        rate_per_second=10,
    )
    assert not created and job["_id"] == job_id


def test_planner_killed_between_id_list_and_batch_document_keeps_that_cut(db: Database) -> None:
    _seed(db, list(range(40)))
    job_id = _job(db)
    sender = RecordingSender()
    plan_job(db, sender, "q", job_id, stop_after=3)
    # The crash: batch 2's id list was written, its batch document was not.
    orphan_ids = load_batch_ids(db[BATCH_IDS], f"{job_id}:0000002")
    db[METADATA].delete_one({"_id": f"{job_id}:0000002"})
    db[METADATA].update_one({"_id": job_id}, {"$set": {"planner": None}})
    plan_job(db, sender, "q", job_id)
    batch2 = db[METADATA].find_one({"_id": f"{job_id}:0000002"})
    assert batch2 is not None and batch2["size"] == len(orphan_ids)
    planned = [
        i
        for b in db[METADATA].find({"kind": "batch", "job_id": job_id}).sort("batch_no", 1)
        for i in load_batch_ids(db[BATCH_IDS], b["_id"])
    ]
    assert planned == list(range(40))


def test_an_embedded_document_id_is_refused_by_the_planner_naming_its_type(
    db: Database,
) -> None:
    # Arrays cannot be an _id in MongoDB; embedded documents can, and no batch can carry one.
    _seed(db, [*range(10), {"region": "eu", "n": 1}, "z"])
    job_id = _job(db, batch_size=4)
    sender = RecordingSender()
    with pytest.raises(BackfillError) as exc:
        plan_job(db, sender, "q", job_id)
    message = str(exc.value)
    assert "_id of type embedded document" in message and job_id in message
    assert "\n" not in message
    planned = [
        i
        for b in db[METADATA].find({"kind": "batch", "job_id": job_id})
        for i in load_batch_ids(db[BATCH_IDS], b["_id"])
    ]
    assert {"region": "eu", "n": 1} not in planned, "the bad id reached a batch"

    # The job can never be planned: it ends failed with the reason, and stays so.
    job = db[METADATA].find_one({"_id": job_id})
    assert job["status"] == "failed" and job["fail_reason"] == message
    db[PRODUCTS].delete_one({"_id": {"region": "eu", "n": 1}})
    assert plan_job(db, sender, "q", job_id)
    assert db[METADATA].find_one({"_id": job_id})["status"] == "failed"
    assert db[METADATA].count_documents({"kind": "batch", "job_id": job_id}) == 0
    # Once the operator fixes the data, a new run plans it all.
    job_id = _job(db, batch_size=4)
    assert plan_job(db, sender, "q", job_id)
    batches = list(db[METADATA].find({"kind": "batch", "job_id": job_id}).sort("batch_no", 1))
    planned = [i for b in batches for i in load_batch_ids(db[BATCH_IDS], b["_id"])]
    assert planned == [*range(10), "z"]


def test_planner_killed_after_a_groups_id_lists_keeps_every_cut_of_it(db: Database) -> None:
    # Cuts are written a group at a time (id lists, then batch documents, then the cursor):
    # a planner killed inside a group leaves several id lists without their documents.
    _seed(db, list(range(60)))
    job_id = _job(db)
    sender = RecordingSender()
    plan_job(db, sender, "q", job_id, stop_after=7)  # groups 0, 1-2, 3-6
    orphans = [f"{job_id}:{n:07d}" for n in (3, 4, 5, 6)]
    sizes = [len(load_batch_ids(db[BATCH_IDS], bid)) for bid in orphans]
    db[METADATA].delete_many({"_id": {"$in": orphans}})
    db[METADATA].update_one(
        {"_id": job_id}, {"$set": {"planner": None, "planning.cursor": 11, "planning.batches": 3}}
    )
    plan_job(db, sender, "q", job_id)
    got = [db[METADATA].find_one({"_id": bid}) for bid in orphans]
    assert [d["size"] if d else None for d in got] == sizes
    planned = [
        i
        for b in db[METADATA].find({"kind": "batch", "job_id": job_id}).sort("batch_no", 1)
        for i in load_batch_ids(db[BATCH_IDS], b["_id"])
    ]
    assert planned == list(range(60))
    job = db[METADATA].find_one({"_id": job_id})
    assert job["planning"]["done"] and job["planning"]["batches"] == 15


def test_planning_writes_its_cuts_in_growing_groups(db: Database) -> None:
    from pymongo import monitoring

    class Inserts(monitoring.CommandListener):
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == "insert" and event.command["insert"] == BATCH_IDS:
                self.sizes.append(len(event.command["documents"]))

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    import pymongo

    _seed(db, list(range(4 * 40)))  # 40 batches of 4
    job_id = _job(db)
    inserts = Inserts()
    client = pymongo.MongoClient(db.client.address and _url(db), event_listeners=[inserts])
    try:
        plan_job(client[db.name], RecordingSender(), "q", job_id)
    finally:
        client.close()
    # One insert of id lists per group: the first batch alone (it can start at once),
    # then groups doubling up to 16, not one insert per batch.
    assert inserts.sizes == [1, 2, 4, 8, 16, 9]
    assert db[METADATA].count_documents({"job_id": job_id, "kind": "batch"}) == 40


def _url(db: Database) -> str:
    host, port = db.client.address
    return f"mongodb://{host}:{port}/?directConnection=true"
