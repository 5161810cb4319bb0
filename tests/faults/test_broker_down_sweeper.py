"""Issue 9 hole 6: the workers' own sweeper survives the broker being down.

No orchestrator waits on the job (`backfill run` without --wait): only a worker's
background sweeper can re-send what Redis loses. Worker W1 runs batches (its sweeper
off); worker W2 sweeps and reaches MongoDB through a freezable proxy. W2's link stalls,
so its sweeper takes its Redis lock and waits on MongoDB; meanwhile W1 is SIGKILLed
mid-batch and Redis is SIGKILLed. The link comes back while Redis is still down: the
sweeper re-queues W1's expired batches and its send fails (kombu's OperationalError,
not a RedisError). Redis then restarts empty. The job must still complete, nothing lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pymongo.database import Database

from backfill_engine.settings import Settings
from orchestrator.stack import ManagedProcess, start_redis
from tests.faults.issue9 import batches, mongo_proxy, proxied_mongo_url, wait_unswept
from tests.faults.reconcile import reconcile
from tests.faults.report import record
from tests.harness import FAST, System, seed_products

pytestmark = pytest.mark.e2e

STALL_SECONDS = 5.5  # > lease (3 s) after the last renewal
REDIS_DOWN_AFTER_THAW_SECONDS = 3.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[list[ManagedProcess]]:
    """A private Redis (no persistence) the test may kill; a list so a restart can replace it."""
    procs = [start_redis(log_dir=tmp_path / "redis")]
    yield procs
    for p in procs:
        p.stop()


@pytest.mark.timeout(150)
def test_worker_sweeper_survives_redis_down_mid_sweep_with_no_orchestrator(
    settings: Settings, db: Database, tmp_path: Path, own_redis: list[ManagedProcess]
) -> None:
    started = time.monotonic()
    first = own_redis[0]
    port = int(first.url.rsplit(":", 1)[1].split("/")[0])
    system = System(
        settings=replace(settings, **FAST, redis_url=first.url), db=db, log_dir=tmp_path / "logs"
    )
    proxy = None
    try:
        system.start_catalog("--latency-ms", "200")
        system.migrate()
        ids = seed_products(db, 1500)
        proxy = mongo_proxy(system)
        sub = {"BACKFILL_SUBCHUNK_SIZE": "25"}
        [w1] = system.start_workers(
            1, concurrency=2, extra_env={**sub, "BACKFILL_WORKER_SWEEP": "0"}
        )
        # The only sweeper, reaching MongoDB through the proxy.
        system.start_workers(
            1, concurrency=1, extra_env={**sub, "MONGO_URL": proxied_mongo_url(proxy)}
        )
        job_id = system.launch(batch_size=100, max_in_flight=4)  # `backfill run`, no --wait
        system.wait_until(
            lambda: len(batches(system, job_id, status="done")) >= 2, 60, "2 done batches"
        )
        proxy.freeze()
        running = len(batches(system, job_id, status="running"))
        w1.kill()  # SIGKILL mid-batch: its leases expire while the link is stalled
        system.workers.remove(w1)
        assert running >= 1, "no batch was running when W1 died: nothing to re-queue"
        time.sleep(1.5)  # the sweeper's next tick takes its Redis lock, then waits on MongoDB
        first.kill()  # SIGKILL, no persistence
        time.sleep(STALL_SECONDS - 1.5)
        proxy.thaw()
        time.sleep(REDIS_DOWN_AFTER_THAW_SECONDS)
        own_redis.append(start_redis(port=port, log_dir=tmp_path / "redis"))
        done_before = len(batches(system, job_id, status="done"))
        assert done_before < 15, "the job ended before Redis died: nothing was tested"

        wait_unswept(
            system,
            job_id,
            timeout=60,
            why="only the worker's own sweeper can re-send the batches Redis lost",
        )
        rec = reconcile(system, job_id, ids)
        record(
            "i9-6",
            title="broker down mid-sweep, no orchestrator",
            fault="Redis SIGKILLed while the worker's sweeper is mid-sweep, restarted empty; "
            "no `backfill run --wait` running",
            how=f"job started without --wait; sweeping worker's MongoDB link stalled "
            f"{STALL_SECONDS:g} s (proxy); the other worker SIGKILLed with {running} batches "
            f"running; Redis killed 1.5 s in; link back; Redis restarted empty "
            f"{REDIS_DOWN_AFTER_THAW_SECONDS:g} s later on the same port",
            outcome="the worker's sweeper survived the failed sends and re-sent every lost "
            "batch; job completed",
            rec=rec,
            seconds=time.monotonic() - started,
        )
    finally:
        if proxy is not None:
            proxy.close()
        system.close()
