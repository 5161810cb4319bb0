"""Issue 9 hole 3: a batch that kills its worker every time ends `failed`, the job goes on.

A watcher SIGKILLs the worker holding batch 1 each time that batch is leased anew (a
batch that makes its worker run out of memory); the test then starts a fresh worker as a
supervisor would. With BACKFILL_MAX_ATTEMPTS=3 the batch must end `failed` saying it was
leased N times without finishing, and the job must end completed_with_errors with every
other batch done.
"""

from __future__ import annotations

import re
import time

import pytest

from backfill_engine.sweeper import sweep_job
from tests.faults.issue9 import TERMINAL, batches, job_doc
from tests.faults.reconcile import reconcile
from tests.faults.report import record
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

POISON = 1
MAX_ATTEMPTS = 3
KILL_LIMIT = MAX_ATTEMPTS + 2  # more leases than this: the batch loops for ever


@pytest.mark.timeout(180)
def test_batch_that_kills_its_worker_every_time_ends_failed(system: System) -> None:
    started = time.monotonic()
    system.start_catalog("--latency-ms", "300")
    ids = seed_products(system.db, 400)
    env = {"BACKFILL_MAX_ATTEMPTS": str(MAX_ATTEMPTS), "BACKFILL_SUBCHUNK_SIZE": "25"}
    system.start_workers(1, concurrency=1, extra_env=env)
    job_id = system.launch(batch_size=100, max_in_flight=2)
    s = system.settings

    seen: set[tuple[object, object]] = set()
    kills = 0
    deadline = time.monotonic() + 120
    last_sweep = 0.0
    while job_doc(system, job_id)["status"] not in TERMINAL:
        assert time.monotonic() < deadline, f"job not finished after 120 s ({kills} kills)"
        [poison] = batches(system, job_id, batch_no=POISON)
        lease = (poison.get("lease_owner"), poison.get("fencing_token"))
        if poison["status"] == "running" and lease not in seen:
            seen.add(lease)
            system.kill_workers()  # SIGKILL, as the OOM killer would
            kills += 1
            assert kills <= KILL_LIMIT, (
                f"batch {POISON} leased {kills} times, killing its worker each time, and "
                f"is still {poison['status']} with attempts={poison.get('attempts')}: "
                f"BACKFILL_MAX_ATTEMPTS={MAX_ATTEMPTS} never applied"
            )
            system.start_workers(1, concurrency=1, extra_env=env)  # the supervisor
        if time.monotonic() - last_sweep >= s.sweep_interval_seconds:
            # As `backfill run --wait` would; the workers sweep too.
            sweep_job(
                system.db,
                system.broker.sender,
                s.queue,
                job_id,
                redispatch_seconds=s.redispatch_seconds,
                broker=system.broker.redis,
            )
            last_sweep = time.monotonic()
        time.sleep(0.05)

    [poison] = batches(system, job_id, batch_no=POISON)
    assert poison["status"] == "failed", poison["status"]
    reasons = " ".join(
        [str(poison.get("last_error") or "")] + [str(e.get("error")) for e in poison["errors"]]
    )
    assert re.search(r"leased \d+ times", reasons, re.I), f"no 'leased N times' in {reasons!r}"
    rec = reconcile(system, job_id, ids, status="completed_with_errors", failed_batches={POISON})
    record(
        "i9-3",
        title="batch that kills its worker",
        fault="every worker that leases batch 1 is SIGKILLed (a poison batch)",
        how=f"watcher kills the worker at each new lease of batch 1 and starts a fresh "
        f"one; BACKFILL_MAX_ATTEMPTS={MAX_ATTEMPTS}, lease 3 s",
        outcome=f"batch 1 failed after {kills} leases ({poison.get('last_error')}); "
        "every other batch done",
        rec=rec,
        seconds=time.monotonic() - started,
    )
