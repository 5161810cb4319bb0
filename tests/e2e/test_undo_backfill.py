"""`migrate down` of a backfill restores what its jobs changed, and only that.

Real workers fill products from the catalog stand-in; `migrate down` of 20240406 then reads
the before-image journal the workers wrote. Whatever the backfill did not write (a brand
that was already right, a value the application changed since) stays as it is.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import bson
import pytest

from backfill_engine.journal import JOURNAL
from backfill_engine.revert_conflicts import iter_conflicts
from backfill_engine.states import METADATA
from backfill_migrations import runner
from catalog_service.data import expected_fields
from migrations.versions._catalog import PRODUCTS
from orchestrator.revert import revert_status
from tests.e2e.test_revert import backfill
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

CATALOG_VERSION = "20240406_backfill_products_from_catalog"
ENRICHED = ("brand", "category", "gtin", "weight_grams", "catalog_synced_at")
WHEN = dt.datetime(2023, 5, 17, 8, 30, 15, 123000)


def _bson(value: Any) -> bytes:
    """Type-exact form of a value: int and float, null and absent all differ."""
    return bson.encode({"v": value})


def _seed(system: System) -> tuple[list[Any], dict[Any, dict[str, Any]]]:
    """300 products; what each one holds before the backfill, besides `_id` and `sku`."""
    ids = seed_products(system.db, 300)
    before: dict[Any, dict[str, Any]] = {}
    for k, pid in enumerate(ids):
        right = expected_fields(str(pid))
        if k < 100:
            held: dict[str, Any] = {"brand": right["brand"]}  # right already: not written
        elif k < 120:
            held = {"brand": None}  # null, not absent
        elif k < 140:
            held = {"weight_grams": 7}  # an int the backfill overwrites
        elif k < 160:
            held = {"weight_grams": 7.0}  # a double: must not come back as an int
        elif k < 170:
            held = {"brand": {"name": "Old", "tags": ["a", 1]}, "category": ["x", "y"]}
        elif k < 180:
            held = {"gtin": WHEN}
        else:
            held = {}
        if held:
            system.db[PRODUCTS].update_one({"_id": pid}, {"$set": held})
        before[pid] = held
    return ids, before


def test_migrate_down_restores_only_what_the_backfill_wrote(system: System) -> None:
    ids, before = _seed(system)
    system.start_workers(1)
    system.migrate(to=CATALOG_VERSION)
    products = system.db[PRODUCTS]
    assert products.count_documents({"catalog_synced_at": {"$exists": True}}) == 300
    # The application edits 50 products after the backfill (an int included).
    app_ids = ids[200:250]
    products.update_many({"_id": {"$in": app_ids}}, {"$set": {"category": "app", "stock": 3}})
    products.update_one({"_id": ids[250]}, {"$set": {"weight_grams": 12}})

    # One journal document per sub-chunk written, never one per product.
    journal_docs = system.db[JOURNAL].count_documents({})
    assert 3 <= journal_docs < 10, journal_docs

    lines: list[str] = []
    config = runner.RunnerConfig.from_settings(system.settings, log=lines.append)
    result = runner.down(system.db, config, steps=1)
    assert [s.version for s in result.done] == [CATALOG_VERSION]

    for k, pid in enumerate(ids):
        doc = products.find_one({"_id": pid})
        assert doc is not None
        expect = dict(before[pid])
        if pid in app_ids:
            expect["category"] = "app"
            expect["stock"] = 3
        if k == 250:
            expect["weight_grams"] = 12
        got = {f: v for f, v in doc.items() if f not in ("_id", "sku")}
        assert {f: _bson(v) for f, v in got.items()} == {f: _bson(v) for f, v in expect.items()}, (
            k,
            got,
            expect,
        )
    assert products.count_documents({"catalog_synced_at": {"$exists": True}}) == 0
    assert any("51 kept" in line for line in lines), lines

    # What was left is listed, as for `backfill revert`, under the id the down printed.
    job = system.db[METADATA].find_one({"kind": "job", "backfill": "catalog", "reverts": None})
    assert job is not None
    undo = system.db[METADATA].find_one({"kind": "job", "reverts": job["_id"]})
    assert undo is not None and undo["via"] == "migrate down" and undo["status"] == "completed"
    assert any(f"backfill conflicts {undo['_id']}" in line for line in lines), lines
    left = list(iter_conflicts(system.db, str(undo["_id"])))
    assert len(left) == 51
    by_item = {(c["item_id"], c["field"]): c for c in left}
    assert set(by_item) == {(p, "category") for p in app_ids} | {(ids[250], "weight_grams")}
    weight = by_item[(ids[250], "weight_grams")]
    assert weight["reason"] == "changed" and _bson(weight["current"]) == _bson(12)
    assert weight["before_absent"] is True
    status = revert_status(system.db, undo)
    assert (status.totals["conflicts"], status.conflicts_listed) == (51, 51)
    assert status.totals["restored"] > 0
    # And from the CLI, as a `migrate down` user would look.
    listed = backfill(system, "conflicts", str(undo["_id"]), "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 51
    shown = backfill(system, "status", str(undo["_id"]))
    assert shown.returncode == 0, shown.stderr
    assert f"reverts job {job['_id']}" in shown.stdout and "conflicts 51" in shown.stdout


def test_undo_without_journal_unsets_nothing_and_says_so(system: System) -> None:
    from migrations.versions._catalog import CATALOG
    from orchestrator.backfill_runs import undo_backfill

    seed_products(system.db, 150)
    system.start_workers(1)
    job_id = system.wait(system.launch()).job["_id"]
    system.db[JOURNAL].delete_many({})  # as a job run before the journal existed
    lines: list[str] = []
    report = undo_backfill(system.db, CATALOG, log=lines.append)
    assert report.jobs_without_journal == [job_id]
    assert report.restored == 0
    assert system.db[PRODUCTS].count_documents({"brand": {"$exists": True}}) == 150
    assert any(job_id in line and "no journal" in line for line in lines), lines


def test_undo_twice_restores_nothing_more(system: System) -> None:
    from migrations.versions._catalog import CATALOG
    from orchestrator.backfill_runs import undo_backfill

    seed_products(system.db, 150)
    system.start_workers(1)
    system.wait(system.launch())
    first = undo_backfill(system.db, CATALOG, log=lambda _m: None)
    assert first.restored == 150 * len(ENRICHED) and first.conflicts == 0
    again = undo_backfill(system.db, CATALOG, log=lambda _m: None)
    assert again.restored == 0 and again.conflicts == 0
    assert again.already == 150 * len(ENRICHED)
    fields = [{f: {"$exists": True}} for f in ENRICHED]
    assert system.db[PRODUCTS].count_documents({"$or": fields}) == 0


def test_jobs_are_undone_newest_first_back_to_what_the_application_wrote(
    system: System,
) -> None:
    from migrations.versions._catalog import CATALOG
    from orchestrator.backfill_runs import undo_backfill

    ids = seed_products(system.db, 200)
    products = system.db[PRODUCTS]
    system.start_workers(1)
    first = system.wait(system.launch())
    edited = ids[:40]  # the application sets a brand between the two runs
    products.update_many({"_id": {"$in": edited}}, {"$set": {"brand": "app"}})
    system.start_catalog("--seed", "1")  # the catalog's answers change: every value differs
    second = system.wait(system.launch())
    assert second.items["written"] == 200
    third = system.wait(system.launch())  # nothing left to change: nothing journaled
    assert third.items["written"] == 0
    assert system.db[JOURNAL].count_documents({"job_id": third.job["_id"]}) == 0

    report = undo_backfill(system.db, CATALOG, log=lambda _m: None)
    assert report.jobs == [second.job["_id"], first.job["_id"]]
    assert report.jobs_without_journal == []
    assert report.conflicts == 40  # the first run's brand, which the application replaced
    for k, pid in enumerate(ids):
        doc = products.find_one({"_id": pid}) or {}
        left = {f: v for f, v in doc.items() if f not in ("_id", "sku")}
        assert left == ({"brand": "app"} if k < 40 else {}), (k, left)


def test_a_pure_function_job_without_journal_is_undone_where_its_value_still_stands(
    system: System,
) -> None:
    from backfill_engine.runtime import worker_definitions
    from orchestrator.backfill_runs import undo_backfill

    gtin14 = worker_definitions(system.settings)["gtin14"]
    ids = seed_products(system.db, 120)
    products = system.db[PRODUCTS]
    for k, pid in enumerate(ids):
        gtin = f"{4006381333931 + k}"
        held: dict[str, Any] = {"gtin": gtin}
        if k < 20:
            held["gtin14"] = gtin.zfill(14)  # right already: never written, never stamped
        products.update_one({"_id": pid}, {"$set": held})
    system.start_workers(1)
    job = system.wait(system.launch(backfill="gtin14"))
    assert job.items["written"] == 100
    system.db[JOURNAL].delete_many({})  # as a job run before the journal existed
    products.update_many({"_id": {"$in": ids[20:30]}}, {"$set": {"gtin14": "app"}})
    products.update_many({"_id": {"$in": ids[30:35]}}, {"$set": {"gtin": "12345678"}})

    lines: list[str] = []
    report = undo_backfill(system.db, gtin14, log=lines.append)
    counts = report.recomputed[job.job["_id"]]
    assert (counts.restored, counts.conflicts) == (85, 15)
    for k, pid in enumerate(ids):
        doc = products.find_one({"_id": pid}) or {}
        if k < 20:
            assert doc["gtin14"] == doc["gtin"].zfill(14) and "gtin14_synced_at" not in doc
        elif k < 30:
            assert doc["gtin14"] == "app"
        elif k < 35:
            assert doc["gtin14"] == f"{4006381333931 + k}".zfill(14)  # its input changed
        else:
            assert "gtin14" not in doc and "gtin14_synced_at" not in doc, (k, doc)
    assert any("unset 85 gtin14 values" in line for line in lines), lines


def test_undo_refuses_while_a_job_of_the_backfill_still_runs(system: System) -> None:
    from migrations.versions._catalog import CATALOG
    from orchestrator.backfill_runs import UndoRefusedError, undo_backfill

    seed_products(system.db, 50)
    job_id = system.launch()  # no worker takes it: it stays running
    with pytest.raises(UndoRefusedError, match=f"{job_id} is still (planning|running)"):
        undo_backfill(system.db, CATALOG, log=lambda _m: None)
    assert system.db[PRODUCTS].count_documents({"sku": {"$exists": True}}) == 50
