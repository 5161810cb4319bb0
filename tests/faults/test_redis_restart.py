"""Scenario 4: Redis restarts empty mid-job (no persistence); the sweeper recovers every batch."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_engine.states import METADATA
from orchestrator.stack import ManagedProcess, start_redis
from tests.faults.reconcile import reconcile, wait_sweeping
from tests.faults.report import record
from tests.harness import FAST, System, seed_products

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[list[ManagedProcess]]:
    """A private Redis (no persistence) the test may kill; a list so a restart can replace it."""
    procs = [start_redis(log_dir=tmp_path / "redis")]
    yield procs
    for p in procs:
        p.stop()


def waiting_batches(broker: redis.Redis, queue: str) -> list[int]:
    """The batch numbers of the task messages waiting in the broker's list for `queue`."""
    found = []
    for raw in broker.lrange(queue, 0, -1):  # type: ignore[union-attr]
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.append(int(args[1]))
    return found


def test_redis_restarted_empty_mid_job_loses_no_batch(
    settings: Settings, db: Database, tmp_path: Path, own_redis: list[ManagedProcess]
) -> None:
    started = time.monotonic()
    first = own_redis[0]
    port = int(first.url.rsplit(":", 1)[1].split("/")[0])
    system = System(
        settings=replace(settings, **FAST, redis_url=first.url), db=db, log_dir=tmp_path / "logs"
    )
    try:
        system.start_catalog("--latency-ms", "200")
        system.migrate()
        ids = seed_products(db, 2000)
        system.start_workers(2, concurrency=2)
        job_id = system.launch(batch_size=100, max_in_flight=6)
        meta = db[METADATA]

        def count(status: str) -> int:
            return meta.count_documents({"job_id": job_id, "kind": "batch", "status": status})

        broker = redis.Redis.from_url(first.url)

        def waiting() -> int:
            return int(broker.llen(system.settings.queue))  # type: ignore[arg-type]

        # Killed while messages wait in Redis, or the restart loses nothing to recover: the
        # 4 slots hold one prefetched message each, so with 6 in flight about 2 wait there.
        wait_sweeping(
            system,
            job_id,
            lambda: count("done") >= 3 and waiting() >= 1,
            what="3 done batches and a message waiting in Redis",
        )
        # Freeze the workers, so no slot takes a waiting message between reading the queue
        # and the kill: exactly the messages read here are the ones the kill loses.
        for w in system.workers:
            os.killpg(w.pid, signal.SIGSTOP)
        try:
            lost = waiting_batches(broker, system.settings.queue)
            in_flight = count("queued") + count("running")
            first.kill()  # SIGKILL, no persistence: every queued and unacked message is gone
            own_redis.append(start_redis(port=port, log_dir=tmp_path / "redis"))
        finally:
            for w in system.workers:
                os.killpg(w.pid, signal.SIGCONT)
        assert lost, "no message waited in Redis at the kill: nothing was tested"
        assert count("done") < 20, "the job ended before Redis died: nothing was tested"

        system.wait(job_id)
        rec = reconcile(system, job_id, ids)
        job = meta.find_one({"_id": job_id}) or {}
        # Each lost message's batch came back through the sweeper and finished ...
        for batch_no in lost:
            batch = meta.find_one({"job_id": job_id, "batch_no": batch_no}) or {}
            assert batch.get("status") == "done", (batch_no, batch.get("status"))
            assert int(batch.get("times_recovered", 0)) >= 1, f"batch {batch_no} not re-sent"
        # ... and the job counts every re-send, so status and metrics tell the truth.
        recovered = int(job.get("messages_resent", 0)) + int(job.get("times_interrupted", 0))
        assert recovered >= len(lost), (recovered, lost)
        queued = len(lost)
        record(
            "4",
            title="Redis restarted empty",
            fault="Redis (broker + rate-limit bucket) SIGKILLed and restarted without data",
            how="private redis-server, no persistence; killed after 3 of 20 batches with "
            f"{in_flight} batches queued/running ({queued} messages waiting), restarted on "
            "the same port; workers reconnect, the sweeper re-sends from MongoDB's batch state",
            outcome=f"{job.get('messages_resent', 0)} lost messages re-sent, "
            f"{job.get('times_interrupted', 0)} expired leases re-queued; job completed",
            rec=rec,
            seconds=time.monotonic() - started,
        )
    finally:
        system.close()
