"""Migration 20240406 joins a running job, and the migrations roll back cleanly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from bson.objectid import ObjectId

from backfill_engine.states import METADATA
from backfill_migrations import runner
from migrations.versions._catalog import PRODUCTS
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

ENRICHED = ("brand", "category", "gtin", "weight_grams", "catalog_synced_at")


def test_migrate_up_joins_the_job_already_running(system: System) -> None:
    seed_products(system.db, 600)
    # An earlier `migrate up` (or an operator) started the job; nobody was working on it.
    job_id = system.launch()
    system.start_workers(2)
    result = system.migrate(to="20240406_backfill_products_from_catalog")
    assert [s.version for s in result.done] == ["20240406_backfill_products_from_catalog"]
    jobs = list(system.db[METADATA].find({"kind": "job"}))
    assert [j["_id"] for j in jobs] == [job_id]
    assert jobs[0]["status"] == "completed"


def test_down_removes_validator_and_enriched_fields(system: System) -> None:
    seed_products(system.db, 300)
    system.start_workers(1)
    system.migrate(to=None)
    config = runner.RunnerConfig.from_settings(system.settings, log=lambda _m: None)
    assert system.db[PRODUCTS].count_documents({"gtin14": {"$exists": True}}) == 300
    result = runner.down(system.db, config, steps=4)
    assert [s.version for s in result.done] == [
        "20240409_generic_item_names",
        "20240408_backfill_gtin14",
        "20240407_enforce_catalog_fields",
        "20240406_backfill_products_from_catalog",
    ]
    assert (
        system.db[PRODUCTS].count_documents(
            {"$or": [{f: {"$exists": True}} for f in (*ENRICHED, "gtin14", "gtin14_synced_at")]}
        )
        == 0
    )
    system.db[PRODUCTS].insert_one({"_id": ObjectId(), "sku": "accepted again"})  # no validator


def test_worker_verb_runs_a_threads_pool(system: System) -> None:
    seed_products(system.db, 400)
    env = {**os.environ, **system.settings.to_env()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "4",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        summary = system.wait(system.launch(batch_size=50))
        assert summary.job["status"] == "completed" and summary.items["written"] == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)
