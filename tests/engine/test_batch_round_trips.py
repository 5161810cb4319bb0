"""The round trips a batch costs: one read and one write per sub-chunk, whatever the server."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pymongo
import redis
from pymongo import monitoring

from backfill_engine.batch_outcome import BatchOutcome
from backfill_engine.batch_run import process_batch
from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.runtime import Runtime, worker_definitions
from backfill_engine.settings import Settings
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


def run_one_batch(system: System, settings: Settings) -> tuple[CommandTally, int]:
    """Plan a 500-product job, run its one batch in-process; the commands and sub-chunks."""
    seed_products(system.db, 500)
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
    tally = CommandTally()
    client: pymongo.MongoClient = pymongo.MongoClient(settings.mongo_url, event_listeners=[tally])
    assert settings.redis_url
    rt = Runtime(
        settings,
        client[settings.mongo_db],
        redis.Redis.from_url(settings.redis_url),
        worker_definitions(settings),
    )
    try:
        assert process_batch(rt, RecordingSender(), job_id, 0, "w") is BatchOutcome.DONE
    finally:
        rt.after_batch.shutdown(wait=True)
        client.close()
    per_chunk = min(settings.subchunk_size, rt.definitions["catalog"].subchunk_size)
    assert system.db[PRODUCTS].count_documents({"catalog_synced_at": {"$exists": True}}) == 500
    return tally, math.ceil(500 / per_chunk)


def test_a_batch_reads_and_writes_each_sub_chunk_in_one_command(system: System) -> None:
    # The default; the embedded stack the tests run on reads in shorter lists.
    tally, subchunks = run_one_batch(system, replace(system.settings, read_ids=0))
    # A read split into several `$in` lists, or a write per document, shows up here.
    assert tally.sent[("find", PRODUCTS)] == subchunks
    assert tally.sent[("getMore", PRODUCTS)] == 0  # each read's first reply holds it all
    assert tally.sent[("update", PRODUCTS)] == subchunks


def test_read_ids_splits_each_sub_chunk_read_and_still_writes_every_document(
    system: System,
) -> None:
    settings = replace(system.settings, subchunk_size=100, read_ids=30)
    tally, subchunks = run_one_batch(system, settings)
    assert subchunks == 5
    assert tally.sent[("find", PRODUCTS)] == subchunks * 4  # 30 + 30 + 30 + 10 ids
    assert tally.sent[("getMore", PRODUCTS)] == 0
    assert tally.sent[("update", PRODUCTS)] == subchunks
