"""The engine sets up and upgrades its own collections; another release's layout is refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pymongo
import pytest
import redis
from pymongo.database import Database

from backfill_engine.batch_outcome import BatchOutcome
from backfill_engine.batch_run import process_batch
from backfill_engine.journal import JOURNAL, ensure_journal
from backfill_engine.notify import NOTIFICATIONS
from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.runtime import Runtime, worker_definitions
from backfill_engine.schema import ensure_schema
from backfill_engine.settings import Settings
from backfill_migrations import runner
from backfill_migrations.discovery import load_file
from migrations import VERSIONS_DIR as MIGRATIONS_DIR
from migrations.versions._catalog import PRODUCTS
from orchestrator.stack import start_worker
from tests.faults.cli import ROOT, cli_env
from tests.harness import FAST, System
from tests.orchestrator.test_planner import RecordingSender

SCHEMA, SCHEMA_VERSION = "backfill_schema", 2  # where the layout's version is recorded
METADATA_VERSION = "20240405_create_backfill_metadata"
GTIN14_VERSION = "20240408_backfill_gtin14"
ITEM_NAMES = "20240409_generic_item_names"
# The sources an existing database recorded when it applied them: they must not change.
RECORDED_CHECKSUMS = {
    METADATA_VERSION: "dc479d444c3d051712184b2c09549e2f86b464e78dd178eac5041038f1bbfd36",
    ITEM_NAMES: "b2a593730fbdfe5d91946e96d55c559e83b3ca50fd2c20b136d9ec29b27de8be",
}
METADATA_INDEXES = {"_id_", "job_batch_no_unique", "job_status", "kind_status", "active_key_unique"}
QUARANTINE_INDEXES = {"_id_", "job_item_unique", "job_replayed"}


@pytest.fixture
def bare(settings: Settings, db: Database, tmp_path: Path) -> Iterator[System]:
    """A system on a database that never ran any migration (a team's database)."""
    sys_ = System(settings=replace(settings, **FAST), db=db, log_dir=tmp_path / "logs")
    yield sys_
    sys_.close()


def cli(system: System, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=cli_env(system),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def gtin_products(db: Database, n: int, *, bad: int = 0) -> None:
    docs = [{"_id": i, "gtin": f"{4000000 + i:08d}"} for i in range(n)]
    docs += [{"_id": n + i, "gtin": f"not-a-gtin-{i}"} for i in range(bad)]
    db[PRODUCTS].insert_many(docs)


def test_the_migrations_existing_databases_applied_keep_their_checksums() -> None:
    for version, recorded in RECORDED_CHECKSUMS.items():
        assert load_file(MIGRATIONS_DIR / f"{version}.py").checksum == recorded, version


def test_the_engine_sets_the_validator_the_metadata_migration_builds() -> None:
    # 20240405 and the engine may each apply it last: they must agree.
    from backfill_engine.schema import metadata_validator

    migration = load_file(MIGRATIONS_DIR / f"{METADATA_VERSION}.py").migration
    module = sys.modules[type(migration).__module__]
    assert module.metadata_validator().build() == metadata_validator()


def test_a_database_that_never_ran_a_migration_runs_a_backfill_from_the_cli(bare: System) -> None:
    gtin_products(bare.db, 30)
    bare.start_workers(1, concurrency=1)
    done = cli(bare, "run", "gtin14", "--wait", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert bare.db[PRODUCTS].count_documents({"gtin14": {"$exists": True}}) == 30
    assert "schema_migrations" not in bare.db.list_collection_names()
    assert set(bare.db.backfill_metadata.index_information()) == METADATA_INDEXES
    assert set(bare.db.backfill_quarantine.index_information()) == QUARANTINE_INDEXES
    assert "backfill_batch_ids" in bare.db.list_collection_names()
    assert bare.db[SCHEMA].find_one({"_id": "engine"})["version"] == SCHEMA_VERSION


def test_two_processes_setting_up_a_new_database_at_once_both_succeed(
    bare: System, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    code = textwrap.dedent(
        f"""
        import os, sys, time
        import pymongo
        from backfill_engine.schema import ensure_schema

        db = pymongo.MongoClient(os.environ["MONGO_URL"])[os.environ["BACKFILL_MONGO_DB"]]
        db.command("ping")
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        ensure_schema(db)
        print("done", flush=True)
        """
    )
    env = {
        **cli_env(bare),
        "MONGO_URL": str(bare.settings.mongo_url),
        "BACKFILL_MONGO_DB": bare.db.name,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    go.touch()  # both are connected: they set up the database together
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert set(bare.db.backfill_metadata.index_information()) == METADATA_INDEXES
    assert set(bare.db.backfill_quarantine.index_information()) == QUARANTINE_INDEXES
    assert list(bare.db[SCHEMA].find()) and bare.db[SCHEMA].count_documents({}) == 1
    # Every collection the engine owns, the journal and the notices included.
    assert {"journal_ttl", "journal_job_batch"} <= set(bare.db[JOURNAL].index_information())
    notices = bare.db[NOTIFICATIONS].index_information()
    assert any(ix.get("expireAfterSeconds") for ix in notices.values()) and len(notices) == 4


def test_first_use_leaves_the_journal_retention_a_process_chose(bare: System) -> None:
    ensure_journal(bare.db, 7)  # a worker run with BACKFILL_JOURNAL_DAYS=7
    ensure_schema(bare.db, force=True)  # another process's first use, with the default
    ttl = bare.db[JOURNAL].index_information()["journal_ttl"]
    assert ttl["expireAfterSeconds"] == 7 * 86_400


def test_a_release_older_than_the_metadata_refuses_in_one_line(system: System) -> None:
    # The database was set up by a newer release (schema version above this one's).
    gtin_products(system.db, 5)
    system.db[SCHEMA].update_one(
        {"_id": "engine"}, {"$set": {"version": SCHEMA_VERSION + 1}}, upsert=True
    )
    done = cli(system, "run", "gtin14")
    out = (done.stdout + done.stderr).strip()
    assert done.returncode != 0, out
    assert "\n" not in out and out.startswith("error:"), out
    assert f"schema version {SCHEMA_VERSION + 1}" in out, out
    assert system.db.backfill_metadata.count_documents({"kind": "job"}) == 0

    worker = start_worker(system.settings, log_dir=system.log_dir, name="old-worker")
    try:
        code = worker.popen.wait(timeout=120)
    finally:
        worker.kill()
    assert worker.log_path is not None
    log = worker.log_path.read_text()
    lines = [ln for ln in log.splitlines() if ln.startswith("error:")]
    assert code != 0 and len(lines) == 1, log[-3000:]
    assert f"schema version {SCHEMA_VERSION + 1}" in lines[0]
    assert "Traceback" not in log


def test_after_migrate_down_to_20240408_batches_do_not_rename_again(system: System) -> None:
    config = runner.RunnerConfig.from_settings(system.settings, log=lambda m: None)
    for version in (
        "20240406_backfill_products_from_catalog",
        "20240407_enforce_catalog_fields",
        GTIN14_VERSION,
    ):
        runner.mark_applied(system.db, version, config)
    runner.up(system.db, config, to=ITEM_NAMES)
    gtin_products(system.db, 4, bad=3)  # three to quarantine, in one batch
    s = system.settings
    job, _ = start_or_join(
        system.db,
        backfill="gtin14",
        collection=PRODUCTS,
        batch_size=50,
        max_in_flight=1,
        rate_per_second=s.rate_per_second,
    )
    job_id = str(job["_id"])
    plan_job(system.db, RecordingSender(), s.queue, job_id)
    # A worker of this release that set the database up before the rollback ...
    client: pymongo.MongoClient = pymongo.MongoClient(s.mongo_url)
    assert s.redis_url
    rt = Runtime(s, client[s.mongo_db], redis.Redis.from_url(s.redis_url), worker_definitions(s))
    from backfill_engine.schema import ensure_schema

    ensure_schema(rt.db)
    # ... then the operator rolls back to a release that keys quarantine by product_id.
    runner.down(system.db, config, to=GTIN14_VERSION)
    q = system.db.backfill_quarantine
    assert "job_product_unique" in q.index_information()
    try:
        outcome = process_batch(rt, RecordingSender(), job_id, 0, "w")
    finally:
        rt.after_batch.shutdown(wait=True)
        client.close()
    assert outcome is BatchOutcome.SCHEMA_PAUSED  # not a duplicate-key error retried as transient
    paused = system.db.backfill_metadata.find_one({"_id": job_id})
    assert paused["status"] == "paused" and "schema version 1" in paused["pause_reason"]
    batch = system.db.backfill_metadata.find_one({"job_id": job_id, "batch_no": 0})
    assert batch["status"] == "pending" and batch["attempts"] <= 1
    # Nothing renamed in the write path, and nothing left in the wrong names.
    assert set(q.index_information()) == {"_id_", "job_product_unique", "job_replayed"}
    assert q.count_documents({"item_id": {"$exists": True}}) == 0

    # A process of this release starting now refuses in one line, and renames nothing.
    done = cli(system, "resume", job_id)
    out = (done.stdout + done.stderr).strip()
    assert done.returncode != 0 and "\n" not in out and "20240409" in out, out
    assert "job_product_unique" in q.index_information()
    assert system.db.backfill_metadata.find_one({"_id": job_id})["status"] == "paused"

    # The way forward: `migrate up` with this release brings the metadata forward first.
    done = cli(system, "migrate", "up")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "brought forward" in done.stdout, done.stdout
    assert set(q.index_information()) == QUARANTINE_INDEXES
    done = cli(system, "resume", job_id)
    assert done.returncode == 0, done.stdout + done.stderr
