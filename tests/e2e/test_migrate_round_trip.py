"""`migrate down` then `migrate up` of a backfill ends where a single `up` ends.

Real workers run 20240406 (and 20240408) through the runner. `down` must give back the
documents exactly as they were before the backfill (types exact, absent fields absent), and
the second `up` must be a new job that writes what the first one wrote, journaled under
its own id, while the history keeps one record per version.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import pytest

from backfill_engine.journal import JOURNAL
from backfill_engine.states import METADATA
from backfill_migrations import runner
from backfill_migrations.history import HISTORY_COLLECTION, read_history
from catalog_service.data import expected_fields
from migrations.versions._catalog import PRODUCTS
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

CATALOG_VERSION = "20240406_backfill_products_from_catalog"
GTIN14_VERSION = "20240408_backfill_gtin14"
# Stamps of when a backfill wrote a document: a second `up` writes them again, later, so
# they are the one thing a round trip cannot give back unchanged.
STAMPS = ("catalog_synced_at", "gtin14_synced_at")
WHEN = dt.datetime(2023, 5, 17, 8, 30, 15, 123000)


def _exact(doc: dict[str, Any], drop: tuple[str, ...] = ()) -> bytes:
    """A document type-exact (int and float, null and absent differ), without `drop`."""
    return bson.encode({k: v for k, v in doc.items() if k not in drop})


def _products(system: System) -> dict[Any, dict[str, Any]]:
    return {d["_id"]: d for d in system.db[PRODUCTS].find().sort("_id", 1)}


def _seed(system: System) -> None:
    """300 products: some the application already filled, some already right."""
    ids = seed_products(system.db, 300)
    for k, pid in enumerate(ids):
        right = expected_fields(str(pid))
        if k < 30:
            held: dict[str, Any] = dict(right)  # all right already: never written nor stamped
        elif k < 60:
            held = {"brand": right["brand"]}  # one field right already: not written
        elif k < 80:
            held = {"brand": None}  # null, not absent
        elif k < 100:
            held = {"weight_grams": 7.0, "stock": 4}  # a double, and a field never backfilled
        elif k < 110:
            held = {"category": ["x", 1]}
        else:
            continue
        system.db[PRODUCTS].update_one({"_id": pid}, {"$set": held})


def _round_trip(system: System, version: str, stamp: str, before: dict[Any, bytes]) -> None:
    """`version` is up: down → exactly `before` (the products before its up); up → as first."""
    config = runner.RunnerConfig.from_settings(system.settings, log=lambda _m: None)
    backfill = "catalog" if version == CATALOG_VERSION else "gtin14"
    after_up = _products(system)
    record = system.db[HISTORY_COLLECTION].find_one({"_id": version})
    assert record is not None and record["state"] == "applied"
    first_job = system.db[METADATA].find_one({"kind": "job", "backfill": backfill, "reverts": None})
    assert first_job is not None

    result = runner.down(system.db, config, steps=1)
    assert [s.version for s in result.done] == [version]
    assert {pid: _exact(d) for pid, d in _products(system).items()} == before

    system.migrate(to=version)
    again = _products(system)
    assert set(again) == set(after_up)
    for pid, doc in again.items():
        first = after_up[pid]
        assert (stamp in doc) == (stamp in first), (pid, doc, first)
        assert _exact(doc, STAMPS) == _exact(first, STAMPS), (pid, doc, first)

    # The second up was a job of its own (not the finished one joined), journaled as itself.
    runs = {"kind": "job", "backfill": backfill, "reverts": None}  # the down's revert job aside
    jobs = list(system.db[METADATA].find(runs).sort("created_at"))
    assert [j["_id"] for j in jobs][:1] == [first_job["_id"]] and len(jobs) == 2
    second = jobs[1]
    assert second["status"] == "completed"
    written = sum(
        b["counters"]["written"] for b in system.db[METADATA].find({"job_id": second["_id"]})
    )
    assert written > 0
    journaled = {
        e["_id"] for j in system.db[JOURNAL].find({"job_id": second["_id"]}) for e in j["docs"]
    }
    assert len(journaled) == written

    # One history record per version, applied, with the checksum it had.
    versions = [r.version for r in read_history(system.db)]
    assert len(versions) == len(set(versions)) and versions.count(version) == 1
    now = system.db[HISTORY_COLLECTION].find_one({"_id": version})
    assert now is not None and now["state"] == "applied"
    assert now["checksum"] == record["checksum"]


def test_down_then_up_of_a_backfill_ends_where_one_up_ends(system: System) -> None:
    _seed(system)
    system.start_workers(1)
    before = {pid: _exact(d) for pid, d in _products(system).items()}
    system.migrate(to=CATALOG_VERSION)
    assert system.db[PRODUCTS].count_documents({"catalog_synced_at": {"$exists": True}}) == 270
    _round_trip(system, CATALOG_VERSION, "catalog_synced_at", before)

    # The same for 20240408, over the enriched products (20240407 in between stays applied).
    # 20240407 requires the stamp: the application stamps the 30 the backfill found right.
    unstamped = {"catalog_synced_at": {"$exists": False}}
    system.db[PRODUCTS].update_many(unstamped, {"$set": {"catalog_synced_at": WHEN}})
    system.migrate(to="20240407_enforce_catalog_fields")
    system.db[PRODUCTS].update_many({"sku": {"$in": ["S0", "S1"]}}, {"$set": {"gtin14": None}})
    before = {pid: _exact(d) for pid, d in _products(system).items()}
    system.migrate(to=GTIN14_VERSION)
    assert system.db[PRODUCTS].count_documents({"gtin14": {"$type": "string"}}) == 300
    _round_trip(system, GTIN14_VERSION, "gtin14_synced_at", before)
