"""An attacker who controls the catalog cannot set `_id`, add fields or inject operators."""

from __future__ import annotations

from backfill_engine.states import QUARANTINE
from catalog_service.data import HOSTILE_KINDS, expected_fields, hostile_kind, is_hostile
from migrations.versions._catalog import PRODUCTS
from tests.catalog_definition import CATALOG_FIELDS
from tests.harness import System, seed_products


def test_fully_hostile_catalog_changes_no_product_and_quarantines_everything(
    system: System,
) -> None:
    # Every answer is hostile; the huge string is over the field limit but keeps responses small.
    system.start_catalog("--hostile-rate", "1", "--huge-chars", "100000")
    ids = seed_products(system.db, 450)
    products = system.db[PRODUCTS]
    # Some products already carry enriched values: they must survive the attack untouched.
    products.update_many({"_id": {"$in": ids[:50]}}, {"$set": {"brand": "Kept", "weight_grams": 7}})
    before = {d["_id"]: d for d in products.find()}
    kinds = {hostile_kind(str(i)) for i in ids}
    assert kinds == set(HOSTILE_KINDS), "every kind of attack is in this run"

    system.start_workers(2)
    summary = system.wait(system.launch())

    assert summary.job["status"] == "completed_with_errors"
    assert summary.items["invalid"] == len(ids)
    assert summary.items["written"] == summary.items["unchanged"] == 0
    after = {d["_id"]: d for d in products.find()}
    assert after == before, "a hostile payload changed a product"
    assert products.count_documents({"_id": "evil"}) == 0
    assert products.count_documents({}) == len(ids)

    held = {d["item_id"]: d for d in system.db[QUARANTINE].find({"job_id": summary.job["_id"]})}
    assert set(held) == set(ids)
    assert {d["reason"] for d in held.values()} == {"invalid"}
    by_kind = {hostile_kind(str(pid)): d["error"] for pid, d in held.items()}
    assert "operator-like key '$set'" in by_kind["dollar_key"]
    assert "dotted key 'a.b'" in by_kind["dotted_key"]
    assert "key '_id'" in by_kind["id_key"]
    assert "operator-like key '$gt'" in by_kind["nested_operator"]
    assert by_kind["huge_string"].endswith("bytes, limit 16384")
    assert "weight_grams must be int" in by_kind["wrong_type"]
    assert "weight_grams must be int, got bool" in by_kind["bool_weight"]
    assert "missing field gtin" in by_kind["missing_field"]
    assert "no entry for this id" in by_kind["no_id"]
    assert "brand not storable in MongoDB" in by_kind["lone_surrogate"]
    # Snapshots are bounded: the huge string is not stored whole in the quarantine either.
    assert all(len(d["payload_snapshot"] or "") <= 2048 for d in held.values())


def test_a_value_bson_cannot_store_is_quarantined_and_its_neighbours_written(
    system: System,
) -> None:
    # A lone surrogate ("\\ud800") is valid JSON but has no UTF-8 form: it used to pass
    # validation and fail the whole batch's bulk write.
    system.start_catalog("--hostile-rate", "0.3", "--huge-chars", "100000")
    ids = seed_products(system.db, 300)
    hostile = {i for i in ids if is_hostile(str(i), 0, 0.3)}
    surrogates = {i for i in hostile if hostile_kind(str(i)) == "lone_surrogate"}
    assert surrogates, "this run serves lone surrogates"

    system.start_workers(1)
    summary = system.wait(system.launch())

    assert summary.job["status"] == "completed_with_errors"
    held = {d["item_id"]: d for d in system.db[QUARANTINE].find({"job_id": summary.job["_id"]})}
    assert set(held) == hostile
    for pid in surrogates:
        assert "not valid UTF-8" in held[pid]["error"]
    fields = list(CATALOG_FIELDS)
    for doc in system.db[PRODUCTS].find({"_id": {"$nin": list(hostile)}}):
        assert {k: doc.get(k) for k in fields} == expected_fields(str(doc["_id"]))
    assert summary.items["written"] == len(ids) - len(hostile)
