"""Scenario 5: MongoDB faults injected with SecantusDB's configureFailPoint/failCommand.

The failpoint is server-wide, so it is filtered to the workers' appName: the test's own
client (and the orchestrator's sweeper in this process) keeps working, as an operator's
would while the workers' connections suffer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymongo
import pytest

from backfill_engine.states import BATCH_IDS, METADATA
from backfill_engine.store import load_batch_ids
from tests.faults.reconcile import reconcile, wait_sweeping
from tests.faults.report import record
from tests.harness import System, seed_products

# Timing-sensitive under load: `make test` runs these after the parallel phase, away from its load.
pytestmark = [pytest.mark.e2e, pytest.mark.timing]

WORKER_APP_NAME = "mongo-backfill-worker"
NETWORK_TIMEOUT = 89  # retryable for the driver, but no topology reset


@dataclass(frozen=True)
class MongoFault:
    key: str
    title: str
    commands: tuple[str, ...]
    times: int | None  # None: alwaysOn for `outage_seconds`, then off
    close_connection: bool = False
    outage_seconds: float = 0.0
    # The error reaches a worker that can still record it and re-send the batch itself;
    # otherwise (the release is an update too) the lease expires and the sweeper steps in.
    self_healing: bool = False

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"failCommands": list(self.commands), "appName": WORKER_APP_NAME}
        if self.close_connection:
            data["closeConnection"] = True
        else:
            data["errorCode"] = NETWORK_TIMEOUT
        return data

    def how(self) -> str:
        what = "connection closed" if self.close_connection else f"error {NETWORK_TIMEOUT}"
        mode = f"next {self.times} times" if self.times else f"alwaysOn {self.outage_seconds:g} s"
        return f"failCommand {list(self.commands)} → {what}, {mode}, appName={WORKER_APP_NAME}"


FAULTS = [
    MongoFault("5a", "failing updates: product writes, checkpoints, lease renewals",
               ("update",), times=12),
    MongoFault("5b", "failing reads: job status and product reads", ("find",), times=12,
               self_healing=True),
    # Leases and claims are guarded updates plus reads (5a, 5b); what is left is the
    # in-flight count a worker runs before dispatching the next batches.
    MongoFault("5c", "failing dispatch counts (aggregate)", ("aggregate",), times=6),
    MongoFault("5d", "network errors: connections closed mid-command",
               ("update", "find", "findAndModify"), times=12, close_connection=True),
    MongoFault("5e", "database outage for the workers", ("update", "find", "findAndModify",
               "insert"), times=None, outage_seconds=5.0),
]  # fmt: skip


@pytest.fixture
def failpoints(mongo_client: pymongo.MongoClient) -> Iterator[pymongo.MongoClient]:
    """The session server's admin client; every failpoint is switched off afterwards."""
    try:
        yield mongo_client
    finally:
        mongo_client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


@pytest.mark.parametrize("fault", FAULTS, ids=[f.key for f in FAULTS])
def test_mongo_faults_leave_no_half_written_batch_and_no_lost_checkpoint(
    system: System, failpoints: pymongo.MongoClient, fault: MongoFault
) -> None:
    started = time.monotonic()
    system.start_catalog("--latency-ms", "60")
    ids = seed_products(system.db, 800)
    system.start_workers(2, concurrency=2)
    job_id = system.launch(batch_size=200, max_in_flight=4)
    meta = system.db[METADATA]
    wait_sweeping(
        system,
        job_id,
        lambda: meta.count_documents({"job_id": job_id, "kind": "batch", "processed": {"$gt": 0}}),
        what="first checkpoint",
    )

    command: dict[str, Any] = {"configureFailPoint": "failCommand", "data": fault.data()}
    if fault.times:
        failpoints.admin.command({**command, "mode": {"times": fault.times}})
    else:
        failpoints.admin.command({**command, "mode": "alwaysOn"})
        time.sleep(fault.outage_seconds)
        failpoints.admin.command({"configureFailPoint": "failCommand", "mode": "off"})

    system.wait(job_id, timeout=240)
    rec = reconcile(system, job_id, ids)
    batches = list(meta.find({"job_id": job_id, "kind": "batch"}))
    for b in batches:
        # No lost checkpoint: each batch's last checkpoint names its last id.
        assert b["last_processed_id"] == load_batch_ids(system.db[BATCH_IDS], b["_id"])[-1]
    retried = sum(1 for b in batches if b["attempts"] > 1)
    errors = sorted({e["error"].split(":")[0] for b in batches for e in b.get("errors", [])})
    assert rec.refetched <= retried * system.settings.subchunk_size
    job = meta.find_one({"_id": job_id}) or {}
    swept = int(job.get("messages_resent", 0)) + int(job.get("times_interrupted", 0))
    if fault.self_healing:
        # The workers re-sent their own batches: nothing waited for the sweeper.
        assert swept == 0, f"{swept} batches needed the sweeper; worker logs in {system.log_dir}"
    record(
        fault.key,
        title=fault.title,
        fault=f"MongoDB: {fault.title}",
        how=fault.how(),
        outcome=f"{retried} of {len(batches)} batches retried"
        + (f" ({', '.join(errors)})" if errors else "")
        + f"; {swept} recovered by the sweeper; every checkpoint at its batch's last id",
        rec=rec,
        seconds=time.monotonic() - started,
    )
