"""The round trips a batch costs: one read and one write per sub-chunk, whatever the server."""

from __future__ import annotations

import math
from collections import Counter

import pymongo
import redis
from pymongo import monitoring

from backfill_engine.batch_run import process_batch
from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.runtime import Runtime, worker_definitions
from migrations.versions._catalog import PRODUCTS
from tests.harness import System, seed_products
from tests.orchestrator.test_planner import RecordingSender


class CommandTally(monitoring.CommandListener):
    """Commands this client sent, by (command name, collection)."""

    def __init__(self) -> None:
        self.sent: Counter[tuple[str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        if not isinstance(target, str):  # getMore names its cursor first, then the collection
            target = event.command.get("collection", "")
        self.sent[(event.command_name, target)] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_batch_reads_and_writes_each_sub_chunk_in_one_command(system: System) -> None:
    s = system.settings
    seed_products(system.db, 500)
    job, _ = start_or_join(
        system.db,
        backfill="catalog",
        collection=PRODUCTS,
        batch_size=500,
        max_in_flight=1,
        rate_per_second=s.rate_per_second,
    )
    job_id = str(job["_id"])
    plan_job(system.db, RecordingSender(), s.queue, job_id)
    tally = CommandTally()
    client: pymongo.MongoClient = pymongo.MongoClient(s.mongo_url, event_listeners=[tally])
    assert s.redis_url
    rt = Runtime(s, client[s.mongo_db], redis.Redis.from_url(s.redis_url), worker_definitions(s))
    try:
        assert process_batch(rt, RecordingSender(), job_id, 0, "w") == "done"
    finally:
        rt.after_batch.shutdown(wait=True)
        client.close()
    subchunks = math.ceil(500 / min(s.subchunk_size, rt.definitions["catalog"].subchunk_size))
    assert system.db[PRODUCTS].count_documents({"catalog_synced_at": {"$exists": True}}) == 500
    # A read split into several `$in` lists, or a write per document, shows up here.
    assert tally.sent[("find", PRODUCTS)] == subchunks
    assert tally.sent[("getMore", PRODUCTS)] == 0  # each read's first reply holds it all
    assert tally.sent[("update", PRODUCTS)] == subchunks
