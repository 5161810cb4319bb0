"""The round trips a batch costs: one read and one write per sub-chunk, and a finish that
hands its slot on to the next batch."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pymongo
import pytest
import redis
from pymongo import monitoring

from backfill_engine import backfill_step
from backfill_engine.batch_outcome import BatchOutcome
from backfill_engine.batch_run import process_batch
from backfill_engine.http_client import SourceUnavailableError
from backfill_engine.journal import JOURNAL
from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.runtime import Runtime, worker_definitions
from backfill_engine.settings import Settings
from backfill_engine.states import BATCH_IDS, METADATA
from backfill_engine.store import batch_id, load_batch_ids
from migrations.versions._catalog import PRODUCTS
from tests.harness import System, seed_products
from tests.orchestrator.test_planner import RecordingSender


class CommandTally(monitoring.CommandListener):
    """Commands this client sent, by (command name, collection); checkpoints and dispatch
    locks sent on their own are counted apart."""

    def __init__(self) -> None:
        self.sent: Counter[tuple[str, str]] = Counter()
        self.checkpoints = 0
        self.locks = 0
        self.verbose = 0  # bulkWrites that asked for a result per operation

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        if not isinstance(target, str):  # getMore names its cursor first, then the collection
            target = event.command.get("collection", "")
        self.sent[(event.command_name, target)] += 1
        if event.command_name == "bulkWrite":
            self.verbose += not event.command.get("errorsOnly", False)
        if (event.command_name, target) == ("update", METADATA):
            for u in event.command["updates"]:
                sets = u["u"].get("$set", {})
                self.checkpoints += "processed" in sets and "status" not in sets
        if (event.command_name, target) == ("findAndModify", METADATA):
            sets = event.command.get("update", {}).get("$set", {})
            self.locks += sets.get("dispatch_lock_until") is not None  # taken, not dropped

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def plan_catalog_job(system: System, settings: Settings) -> str:
    """Start and plan a catalog job of 500-id batches, cap 1; its id."""
    job, _ = start_or_join(
        system.db,
        backfill="catalog",
        collection=PRODUCTS,
        batch_size=500,
        max_in_flight=1,
        rate_per_second=settings.rate_per_second,
    )
    job_id = str(job["_id"])
    plan_job(system.db, RecordingSender(), settings.queue, job_id)
    return job_id


def run_batches(
    system: System,
    settings: Settings,
    n: int = 500,
    *,
    batches: int = 1,
    set_cap: int | None = None,
) -> tuple[CommandTally, int, str, RecordingSender]:
    """Plan an `n`-product job (cap 1) and run its first `batches` batches in-process, one
    after another, the cap set to `set_cap` after planning if given; the commands they
    sent, sub-chunks per batch, the job and what was sent."""
    seed_products(system.db, n)
    job_id = plan_catalog_job(system, settings)
    if set_cap is not None:  # as `backfill set --max-in-flight` does
        system.db[METADATA].update_one({"_id": job_id}, {"$set": {"max_in_flight": set_cap}})
    tally = CommandTally()
    client: pymongo.MongoClient = pymongo.MongoClient(settings.mongo_url, event_listeners=[tally])
    assert settings.redis_url
    rt = Runtime(
        settings,
        client[settings.mongo_db],
        redis.Redis.from_url(settings.redis_url),
        worker_definitions(settings),
    )
    sender = RecordingSender()
    try:
        for batch_no in range(batches):
            assert process_batch(rt, sender, job_id, batch_no, "w") is BatchOutcome.DONE
            rt.after_batch.submit(lambda: None).result()  # its dispatch has run
    finally:
        rt.after_batch.shutdown(wait=True)
        client.close()
    per_chunk = min(settings.subchunk_size, rt.definitions["catalog"].subchunk_size)
    written = system.db[PRODUCTS].count_documents({"catalog_synced_at": {"$exists": True}})
    assert written == min(n, 500 * batches)
    return tally, math.ceil(500 / per_chunk), job_id, sender


def run_one_batch(system: System, settings: Settings) -> tuple[CommandTally, int]:
    """Plan a 500-product job, run its one batch in-process; the commands and sub-chunks."""
    tally, subchunks, _, _ = run_batches(system, settings)
    return tally, subchunks


def test_a_batch_reads_and_writes_each_sub_chunk_in_one_command(system: System) -> None:
    # The default; the embedded stack the tests run on reads in shorter lists.
    tally, subchunks = run_one_batch(system, replace(system.settings, read_ids=0))
    # A read split into several `$in` lists, or a write per document, shows up here.
    assert tally.sent[("find", PRODUCTS)] == subchunks
    assert tally.sent[("getMore", PRODUCTS)] == 0  # each read's first reply holds it all
    # The server takes a client bulkWrite (SecantusDB speaks wire version 27, as mongod
    # 8.2): journal, updates and checkpoint go in one command per sub-chunk.
    assert tally.sent[("bulkWrite", "")] == subchunks
    # Its reply is the summary: no result document per written document.
    assert tally.verbose == 0
    assert tally.sent[("update", PRODUCTS)] == 0
    assert tally.sent[("insert", JOURNAL)] == 0
    assert tally.checkpoints == 0  # each rode with its sub-chunk's writes, the last with
    # the finish
    # Its start: the job and its id list, a point read on `_id` each, and the lease. No
    # aggregation joining them: a server that runs the join's sub-pipeline as a scan pays
    # per batch document of every job (docs/benchmarks.md).
    assert tally.sent[("find", BATCH_IDS)] == 1
    assert tally.sent[("aggregate", BATCH_IDS)] == 0
    # The lease and the finish's claim of a next batch to hand its slot on to.
    assert tally.sent[("findAndModify", METADATA)] == 2 + tally.locks


def test_without_client_bulk_write_each_sub_chunk_writes_journal_updates_and_checkpoint(
    system: System,
) -> None:
    # A server before MongoDB 8.0, or BACKFILL_CLIENT_BULK_WRITE=0.
    settings = replace(system.settings, read_ids=0, client_bulk_write=False)
    tally, subchunks = run_one_batch(system, settings)
    assert tally.sent[("find", PRODUCTS)] == subchunks
    assert tally.sent[("bulkWrite", "")] == 0
    assert tally.sent[("update", PRODUCTS)] == subchunks
    assert tally.sent[("insert", JOURNAL)] == subchunks
    assert tally.checkpoints == subchunks - 1  # the last is the finish's


def test_read_ids_splits_each_sub_chunk_read_and_still_writes_every_document(
    system: System,
) -> None:
    settings = replace(system.settings, subchunk_size=100, read_ids=30)
    tally, subchunks = run_one_batch(system, settings)
    assert subchunks == 5
    assert tally.sent[("find", PRODUCTS)] == subchunks * 4  # 30 + 30 + 30 + 10 ids
    assert tally.sent[("getMore", PRODUCTS)] == 0
    assert tally.sent[("bulkWrite", "")] == subchunks


def test_a_finished_batch_hands_its_slot_on_without_the_dispatch_lock(system: System) -> None:
    tally, _, job_id, sender = run_batches(system, system.settings, 1500, batches=1)
    meta = system.db[METADATA]
    assert tally.locks == 0  # no lock, no count: the finish claimed the next batch itself
    nxt = meta.find_one({"_id": batch_id(job_id, 1)})
    assert nxt is not None and nxt["status"] == "queued" and nxt["dispatch_cap"] == 1
    assert sender.sent == [("backfill.batch", [job_id, 1])]
    assert meta.find_one({"_id": batch_id(job_id, 2)})["status"] == "pending"  # cap 1 held


def test_a_changed_cap_goes_back_to_the_counted_fill(system: System) -> None:
    tally, _, job_id, sender = run_batches(system, system.settings, 2000, set_cap=3)
    assert tally.locks == 1  # the counted fill, which sees the new cap
    assert sorted(args[1] for _, args in sender.sent) == [1, 2, 3]  # three slots free now
    queued = system.db[METADATA].find({"job_id": job_id, "status": "queued"})
    assert {d["dispatch_cap"] for d in queued} == {3}


@pytest.mark.parametrize("together", [True, False], ids=["bulkWrite", "separate"])
def test_every_written_sub_chunk_is_recorded_before_the_source_is_asked_again(
    system: System, monkeypatch: pytest.MonkeyPatch, together: bool
) -> None:
    # What the database holds when the third sub-chunk's source call starts is what a
    # worker killed during that call leaves: the two sub-chunks written must be recorded,
    # or the retry asks the source again for what is written already (a checkpoint held
    # back to ride with the next write would fail this).
    durable: dict[str, Any] = {}
    settings = replace(system.settings, read_ids=0, client_bulk_write=together)
    seed_products(system.db, 500)
    job_id = plan_catalog_job(system, settings)

    def third_fails(n: int) -> None:
        if n == 3:
            durable.update(system.db[METADATA].find_one({"_id": batch_id(job_id, 0)}) or {})
            raise SourceUnavailableError("the catalog is down")

    outcome = deliver_first_batch(system, settings, job_id, monkeypatch, third_fails)
    assert outcome is BatchOutcome.RETRY
    assert durable["processed"] == 200 and durable["counters"]["written"] == 200
    assert durable["last_processed_id"] == durable_last(system, job_id)
    batch = system.db[METADATA].find_one({"_id": batch_id(job_id, 0)})
    assert batch is not None and batch["lease_owner"] is None
    assert batch["processed"] == 200 and batch["counters"]["written"] == 200
    assert system.db[PRODUCTS].count_documents({"catalog_synced_at": {"$exists": True}}) == 200


def deliver_first_batch(
    system: System,
    settings: Settings,
    job_id: str,
    monkeypatch: pytest.MonkeyPatch,
    before_source_call: Callable[[int], None],
) -> BatchOutcome:
    """Run the job's first batch in-process, calling `before_source_call(n)` before its
    n-th source call (n from 1; it may raise as the source would); the delivery's outcome."""
    calls = {"n": 0}
    real = backfill_step.ask_source

    def ask_source(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        before_source_call(calls["n"])
        return real(*args, **kwargs)

    monkeypatch.setattr(backfill_step, "ask_source", ask_source)
    assert settings.redis_url
    rt = Runtime(
        settings, system.db, redis.Redis.from_url(settings.redis_url), worker_definitions(settings)
    )
    try:
        return process_batch(rt, RecordingSender(), job_id, 0, "w")
    finally:
        rt.after_batch.shutdown(wait=True)


def durable_last(system: System, job_id: str) -> Any:
    """The 200th id of the job's first batch: where its checkpoint after two sub-chunks is."""
    return load_batch_ids(system.db[BATCH_IDS], batch_id(job_id, 0))[199]


@pytest.mark.parametrize("together", [True, False], ids=["bulkWrite", "separate"])
def test_documents_deleted_between_the_read_and_the_write_are_counted_and_checkpointed(
    system: System, monkeypatch: pytest.MonkeyPatch, together: bool
) -> None:
    # Three documents of the second sub-chunk vanish while its source call runs: they were
    # read, so they are updated, and match nothing. The write's counts (the checkpoint's
    # own match taken out of a summary-only reply) must say so, and the checkpoint that
    # rode along with the assumed counts must be corrected before the next source call.
    durable: dict[str, Any] = {}
    settings = replace(system.settings, read_ids=0, client_bulk_write=together)
    seed_products(system.db, 500)
    job_id = plan_catalog_job(system, settings)
    ids = load_batch_ids(system.db[BATCH_IDS], batch_id(job_id, 0))
    doomed = ids[100:103]

    def deleting(n: int) -> None:
        if n == 2:
            system.db[PRODUCTS].delete_many({"_id": {"$in": doomed}})
        if n == 3:
            durable.update(system.db[METADATA].find_one({"_id": batch_id(job_id, 0)}) or {})

    outcome = deliver_first_batch(system, settings, job_id, monkeypatch, deleting)
    assert outcome is BatchOutcome.DONE
    assert durable["processed"] == 200
    assert durable["counters"]["written"] == 197 and durable["counters"]["deleted"] == 3
    batch = system.db[METADATA].find_one({"_id": batch_id(job_id, 0)})
    assert batch is not None and batch["status"] == "done"
    assert batch["counters"]["written"] == 497 and batch["counters"]["deleted"] == 3
    assert system.db[PRODUCTS].count_documents({"catalog_synced_at": {"$exists": True}}) == 497


@pytest.mark.parametrize("together", [True, False], ids=["bulkWrite", "separate"])
def test_a_lease_taken_over_during_the_source_call_stops_the_batch_at_its_write(
    system: System, monkeypatch: pytest.MonkeyPatch, together: bool
) -> None:
    # Another worker's lease (a new fencing token) while the second sub-chunk's source call
    # runs: the checkpoint under the old token matches nothing, so the delivery stops as
    # LEASE_LOST and records nothing over the new owner's progress.
    settings = replace(system.settings, read_ids=0, client_bulk_write=together)
    seed_products(system.db, 500)
    job_id = plan_catalog_job(system, settings)
    bid = batch_id(job_id, 0)

    def taken_over(n: int) -> None:
        if n == 2:
            system.db[METADATA].update_one(
                {"_id": bid}, {"$inc": {"fencing_token": 1}, "$set": {"lease_owner": "other"}}
            )

    outcome = deliver_first_batch(system, settings, job_id, monkeypatch, taken_over)
    assert outcome is BatchOutcome.LEASE_LOST
    batch = system.db[METADATA].find_one({"_id": bid})
    assert batch is not None and batch["lease_owner"] == "other" and batch["status"] == "running"
    assert batch["processed"] == 100  # the first sub-chunk's checkpoint, nothing after it
