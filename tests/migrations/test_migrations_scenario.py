"""The scenario migrations 20240405 and 20240407 against a real server."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from bson.int64 import Int64
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, WriteError

from backfill_migrations import MigrationFailedError, PreconditionFailedError, runner
from backfill_migrations.discovery import load_file
from migrations import VERSIONS_DIR as MIGRATIONS_DIR
from tests.migrations.mig_helpers import MigrationDir

METADATA = "20240405_create_backfill_metadata"
ENFORCE = "20240407_enforce_catalog_fields"
ITEM_NAMES = "20240409_generic_item_names"
NOW = dt.datetime(2024, 4, 5, 12, 0)


def migration(version: str):
    return load_file(MIGRATIONS_DIR / f"{version}.py").migration


def job(**over) -> dict:
    doc = {
        "_id": "job-1",
        "kind": "job",
        "backfill": "catalog",
        "status": "running",
        "batch_size": 500,
        "max_in_flight": 8,
        "created_at": NOW,
        "planning_cursor": None,  # extra fields are allowed
    }
    return {**doc, **over}


def batch(**over) -> dict:
    doc = {
        "_id": "job-1:0",
        "kind": "batch",
        "job_id": "job-1",
        "batch_no": 0,
        "ids": [1, 2, 3],
        "status": "pending",
        "attempts": 0,
        "fencing_token": Int64(0),
        "counters": {"written": 0, "unchanged": 0, "missing": 0, "invalid": 0, "deleted": 0},
    }
    return {**doc, **over}


def enriched(i: int) -> dict:
    return {
        "_id": i,
        "name": f"p{i}",
        "brand": "Acme",
        "category": "tools",
        "gtin": f"{i:013d}",
        "weight_grams": 100 + i,
        "catalog_synced_at": NOW,
    }


def test_metadata_up_is_idempotent_and_validates_jobs_and_batches(db: Database) -> None:
    m = migration(METADATA)
    m.up(db)
    m.up(db)
    meta = db.backfill_metadata
    meta.insert_one(job())
    meta.insert_one(job(_id="job-2", backfill="other", status="completed_with_errors"))
    meta.insert_one(batch())
    meta.insert_one(batch(_id="job-1:1", batch_no=1, status="queued"))
    bad_docs = [
        {"_id": "x", "status": "running"},  # no kind
        job(_id="j3", kind="neither"),
        job(_id="j4", status="exploded"),
        job(_id="j5", batch_size=0),
        job(_id="j6", max_in_flight="8"),
        job(_id="j7", created_at="yesterday"),
        batch(_id="b1", batch_no=-1),
        batch(_id="b2", ids="1,2,3"),
        batch(_id="b3", counters={"written": "many"}),
        batch(_id="b4", fencing_token=1.5),
        {**job(), "_id": 42},  # job ids are strings
    ]
    for doc in bad_docs:
        with pytest.raises(WriteError):
            meta.insert_one(doc)
    assert meta.count_documents({}) == 4


def test_metadata_indexes_enforce_uniqueness_where_the_design_needs_it(db: Database) -> None:
    migration(METADATA).up(db)
    meta = db.backfill_metadata
    meta.insert_one(batch())
    with pytest.raises(DuplicateKeyError):
        meta.insert_one(batch(_id="job-1:0-again"))  # same job + batch number
    meta.insert_one(job(active_key="catalog"))
    meta.insert_one(job(_id="job-old"))  # no active_key: not part of the unique index
    with pytest.raises(DuplicateKeyError):
        meta.insert_one(job(_id="job-3", active_key="catalog"))  # one active job per backfill
    names = set(meta.index_information())
    assert {"job_batch_no_unique", "job_status", "kind_status", "active_key_unique"} <= names

    migration(ITEM_NAMES).up(db)
    q = db.backfill_quarantine
    q.insert_one({"job_id": "job-1", "item_id": 7, "replayed": False})
    with pytest.raises(DuplicateKeyError):
        q.insert_one({"job_id": "job-1", "item_id": 7, "replayed": True})
    assert {"job_item_unique", "job_replayed"} <= set(q.index_information())


def first_release_layout(db: Database) -> None:
    """The engine's collections as the first release left them: entries keyed by product_id."""
    from backfill_engine.schema import metadata_validator

    db.create_collection(
        "backfill_metadata", validator=metadata_validator(), validationLevel="strict"
    )
    q = db.create_collection("backfill_quarantine")
    q.create_index([("job_id", 1), ("product_id", 1)], name="job_product_unique", unique=True)
    q.create_index([("job_id", 1), ("replayed", 1)], name="job_replayed")
    db.create_collection("backfill_batch_ids")


def test_a_first_release_database_gets_generic_item_names_and_can_go_back(db: Database) -> None:
    from backfill_engine.schema import SchemaMismatchError, ensure_schema

    first_release_layout(db)
    q, meta = db.backfill_quarantine, db.backfill_metadata
    q.insert_many([{"job_id": "job-1", "product_id": i, "replayed": False} for i in (1, 2, 3)])
    meta.insert_one(job(planning={"batches": 1, "products": 3, "done": True}))

    migration(ITEM_NAMES).up(db)
    assert sorted(d["item_id"] for d in q.find()) == [1, 2, 3]
    assert q.count_documents({"product_id": {"$exists": True}}) == 0
    assert meta.find_one({"_id": "job-1"})["planning"] == {"batches": 1, "items": 3, "done": True}
    indexes = set(q.index_information())
    assert "job_item_unique" in indexes and "job_product_unique" not in indexes
    with pytest.raises(DuplicateKeyError):
        q.insert_one({"job_id": "job-1", "item_id": 2, "replayed": False})
    assert db.backfill_schema.find_one({"_id": "engine"})["version"] == 2
    migration(ITEM_NAMES).up(db)  # again: nothing left to rename, nothing broken
    assert q.count_documents({"item_id": {"$exists": True}}) == 3

    migration(ITEM_NAMES).down(db)
    assert sorted(d["product_id"] for d in q.find()) == [1, 2, 3]
    assert meta.find_one({"_id": "job-1"})["planning"]["products"] == 3
    assert "job_product_unique" in set(q.index_information())
    # A process of this release starting now refuses, and renames nothing back.
    with pytest.raises(SchemaMismatchError, match="20240409_generic_item_names"):
        ensure_schema(db)
    assert q.count_documents({"product_id": {"$exists": True}}) == 3
    migration(ITEM_NAMES).up(db)  # the way forward again
    assert q.count_documents({"item_id": {"$exists": True}}) == 3
    ensure_schema(db)


def test_the_metadata_migration_alone_gives_this_release_s_names(db: Database) -> None:
    # 20240406 runs the catalog backfill before 20240409 on a new database: 20240405 sets
    # the collections up as the engine does, so two quarantined items never collide.
    migration(METADATA).up(db)
    q = db.backfill_quarantine
    q.insert_many([{"job_id": "j", "item_id": i, "replayed": False} for i in (1, 2)])
    indexes = set(q.index_information())
    assert "job_item_unique" in indexes and "job_product_unique" not in indexes


def test_the_metadata_migration_after_the_engine_keeps_the_engine_s_layout(db: Database) -> None:
    # A database the engine set up first (a `backfill run` before any migration), then
    # 20240405: the first release's unique index must not come back beside the new one.
    from backfill_engine.schema import ensure_schema

    ensure_schema(db)
    db.backfill_quarantine.insert_many(
        [{"job_id": "j", "item_id": i, "replayed": False} for i in (1, 2)]
    )
    migration(METADATA).up(db)
    indexes = set(db.backfill_quarantine.index_information())
    assert "job_item_unique" in indexes and "job_product_unique" not in indexes
    db.backfill_quarantine.insert_one({"job_id": "j", "item_id": 3, "replayed": False})


def test_a_renamer_another_process_beat_to_the_old_index_still_finishes(db: Database) -> None:
    from backfill_engine import schema

    first_release_layout(db)
    q = db.backfill_quarantine
    q.insert_many([{"job_id": "job-1", "product_id": i, "replayed": False} for i in (1, 2)])
    q.drop_index("job_product_unique")  # another process of this release got there first
    schema._to_item_names(db)
    assert sorted(d["item_id"] for d in q.find()) == [1, 2]
    assert "job_item_unique" in set(q.index_information())


def test_metadata_down_drops_both_collections(db: Database) -> None:
    m = migration(METADATA)
    m.up(db)
    m.down(db)
    names = db.list_collection_names()
    assert "backfill_metadata" not in names and "backfill_quarantine" not in names


def test_enforce_refuses_while_products_lack_fields(db: Database) -> None:
    db.products.insert_many([enriched(i) for i in range(3)])
    db.products.insert_many([{"_id": 100 + i, "name": "raw"} for i in range(7)])
    db.products.insert_one({**enriched(50), "brand": None})
    with pytest.raises(PreconditionFailedError) as err:
        migration(ENFORCE).up(db)
    message = str(err.value)
    assert "8 product(s)" in message
    assert len(err.value.sample_ids) == 5  # type: ignore[attr-defined]
    assert "100" in message
    assert "validator" not in db.products.options()  # nothing was changed


def test_enforce_adds_validator_and_indexes_and_down_removes_them(db: Database) -> None:
    db.products.insert_many([enriched(i) for i in range(3)])
    m = migration(ENFORCE)
    m.up(db)
    products = db.products
    products.insert_one({**enriched(10), "weight_grams": Int64(10)})
    for bad in (
        {"_id": 11, "name": "raw"},
        {**enriched(12), "gtin": 12},
        {**enriched(13), "weight_grams": "13g"},
        {**enriched(14), "catalog_synced_at": "2024-04-05"},
    ):
        with pytest.raises(WriteError):
            products.insert_one(bad)
    with pytest.raises(WriteError):  # strict: updates of existing documents are checked too
        products.update_one({"_id": 1}, {"$unset": {"brand": ""}})
    assert {"gtin", "category_brand"} <= set(products.index_information())

    m.down(db)
    products.insert_one({"_id": 15, "name": "raw again"})
    assert set(products.index_information()) == {"_id_"}
    m.down(db)  # idempotent


def test_scenario_migrations_run_through_the_runner(db: Database, mdir: MigrationDir) -> None:
    for version in (METADATA, ENFORCE):
        shutil.copy(MIGRATIONS_DIR / f"{version}.py", mdir.path)
    db.products.insert_one({"_id": 1, "name": "not enriched"})
    with pytest.raises(MigrationFailedError, match="1 product"):
        runner.up(db, mdir.config())
    assert db.schema_migrations.count_documents({"_id": ENFORCE, "state": "failed"}) == 1
    db.products.replace_one({"_id": 1}, enriched(1))
    result = runner.up(db, mdir.config(), retry=True)
    assert [s.version for s in result.done] == [ENFORCE]
    assert not runner.status(db, mdir.config()).needs_attention
    runner.down(db, mdir.config(), steps=2)
    assert "backfill_metadata" not in db.list_collection_names()
