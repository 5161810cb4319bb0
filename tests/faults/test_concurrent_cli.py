"""Scenario 8: two `backfill run` and two `backfill migrate up` started at the same moment."""

from __future__ import annotations

import json
import time

import pytest

from backfill_engine.states import METADATA
from tests.faults.cli import spawn_cli
from tests.faults.reconcile import reconcile
from tests.faults.report import record
from tests.harness import METADATA_VERSION, System, seed_products

pytestmark = pytest.mark.e2e


def test_two_runs_and_two_migrations_at_once_make_one_job_and_apply_once(
    system: System,
) -> None:
    started = time.monotonic()
    ids = seed_products(system.db, 1000)
    system.db["schema_migrations"].drop()  # the fixture applied 20240405; start from nothing
    system.db.drop_collection(METADATA)
    system.start_workers(2)
    logs = system.log_dir
    procs = {
        **{
            f"migrate-{n}": spawn_cli(
                system, "migrate", "up", "--to", METADATA_VERSION, log=logs / f"migrate-{n}.log"
            )
            for n in (1, 2)
        },
        **{
            f"run-{n}": spawn_cli(system, "run", "catalog", "--json", log=logs / f"run-{n}.log")
            for n in (1, 2)
        },
    }
    codes = {name: p.wait(timeout=240) for name, p in procs.items()}
    outputs = {name: (logs / f"{name}.log").read_text() for name in procs}
    assert codes["migrate-1"] == codes["migrate-2"] == 0, outputs

    history = list(system.db["schema_migrations"].find({"_id": {"$ne": "lock"}}))
    applied = [h for h in history if h.get("state") == "applied"]
    assert [h.get("version", h["_id"]) for h in applied] == [METADATA_VERSION], history

    # Each run sets up the engine's collections itself (the same code 20240405 calls), so
    # none is refused for coming before the migration, and `active_key` keeps them to one job.
    jobs = list(system.db[METADATA].find({"kind": "job"}))
    assert len(jobs) == 1, f"{len(jobs)} jobs: {outputs}"
    job_id = str(jobs[0]["_id"])
    ran = [json.loads(outputs[n]) for n in ("run-1", "run-2") if codes[n] == 0]
    assert all(r["job_id"] == job_id for r in ran), outputs
    refused = [outputs[n].strip() for n in ("run-1", "run-2") if codes[n] != 0]
    assert not refused, outputs

    system.wait(job_id)
    rec = reconcile(system, job_id, ids)
    record(
        "8",
        title="concurrent runs and migrations",
        fault="two `backfill run` and two `backfill migrate up` started at the same moment",
        how="4 CLI processes spawned together on an empty metadata collection",
        outcome=f"1 job ({len(ran)} runs started or joined it, {len(refused)} refused in one "
        f"line), {METADATA_VERSION} applied once",
        rec=rec,
        seconds=time.monotonic() - started,
        notes="; ".join(refused) if refused else "",
    )
