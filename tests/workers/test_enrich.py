"""The pure core: validation of untrusted payloads, $set diffing, payload hashing."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import bson
import pytest
from bson import ObjectId

from backfill_engine.payload import (
    CHAIN_START,
    MAX_PAYLOAD_BYTES,
    MAX_STRING_CHARS,
    InvalidPayloadError,
    build_set,
    chain_hash,
    chain_items,
    diff_fields,
    item_digest,
    payload_snapshot,
    typed_id,
)
from backfill_engine.validate import validate_payload
from tests.catalog_definition import (
    CATALOG,
    CATALOG_FIELDS,
    MAX_WEIGHT_GRAMS,
    SYNCED_AT_FIELD,
    validate_item,
)

GOOD: dict[str, Any] = {
    "id": "65f0c0ffee0000000000abcd",
    "brand": "Acme",
    "category": "tools",
    "gtin": "4006381333931",
    "weight_grams": 1250,
}
FIELDS = {k: GOOD[k] for k in CATALOG_FIELDS}


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


def test_valid_payload_yields_exactly_the_whitelisted_fields() -> None:
    assert validate_item(GOOD) == FIELDS


def test_unknown_harmless_keys_are_ignored_not_written() -> None:
    out = validate_item(with_(name="Hammer", tags=["a", "b"], extra={"nested": 1}))
    assert out == FIELDS


@pytest.mark.parametrize("gtin", ["12345678", "12345678901234", "00000000000000", "4006381333931"])
def test_gtin_of_8_to_14_digits_is_accepted(gtin: str) -> None:
    assert validate_item(with_(gtin=gtin))["gtin"] == gtin


@pytest.mark.parametrize("weight", [1, 500, MAX_WEIGHT_GRAMS])
def test_weight_in_range_is_accepted(weight: int) -> None:
    assert validate_item(with_(weight_grams=weight))["weight_grams"] == weight


def test_string_at_the_size_limit_is_accepted() -> None:
    assert validate_item(with_(brand="b" * MAX_STRING_CHARS))["brand"] == "b" * MAX_STRING_CHARS


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "not an object"),
        ([GOOD], "not an object"),
        ("brand", "not an object"),
        (42, "not an object"),
        (with_(**{"$set": {"brand": "x"}}), "operator-like key"),
        (with_(**{"$where": "1"}), "operator-like key"),
        (with_(**{"a.b": 1}), "dotted key"),
        (with_(**{".": 1}), "dotted key"),
        (with_(_id="evil"), "'_id'"),
        (with_(_id=ObjectId()), "'_id'"),
        (with_(extra={"$inc": {"weight_grams": 1}}), "operator-like key"),
        (with_(extra={"deep": {"deeper": {"x.y": 1}}}), "dotted key"),
        (with_(extra=[{"ok": 1}, {"$gt": 0}]), "operator-like key"),
        (with_(extra={"_id": 1}), "'_id'"),
        (with_(category={"$gt": ""}), "operator-like key"),
        (with_(brand={"name": "Acme"}), "brand must be str"),
        (with_(**{"bad\x00key": 1}), "NUL"),
    ],
)
def test_hostile_or_non_object_payloads_are_rejected(payload: Any, reason: str) -> None:
    with pytest.raises(InvalidPayloadError) as exc:
        validate_item(payload)
    assert reason in exc.value.reason


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (without("brand"), "brand"),
        (without("category"), "category"),
        (without("gtin"), "gtin"),
        (without("weight_grams"), "weight_grams"),
        (with_(brand=None), "brand"),
        (with_(brand=17), "brand"),
        (with_(brand=""), "brand"),
        (with_(brand="   "), "brand"),
        (with_(category=["tools"]), "category"),
        (with_(gtin=4006381333931), "gtin"),
        (with_(gtin="1234567"), "gtin"),
        (with_(gtin="123456789012345"), "gtin"),
        (with_(gtin="12345abc9012"), "gtin"),
        (with_(gtin="١٢٣٤٥٦٧٨"), "gtin"),  # Arabic-Indic digits are not ASCII digits
        (with_(gtin=" 12345678"), "gtin"),
        (with_(weight_grams="500"), "weight_grams"),
        (with_(weight_grams=True), "weight_grams"),
        (with_(weight_grams=False), "weight_grams"),
        (with_(weight_grams=500.0), "weight_grams"),
        (with_(weight_grams=0), "weight_grams"),
        (with_(weight_grams=-5), "weight_grams"),
        (with_(weight_grams=MAX_WEIGHT_GRAMS + 1), "weight_grams"),
        (with_(weight_grams=10**30), "weight_grams"),
        (with_(brand="b" * (MAX_STRING_CHARS + 1)), "brand"),
    ],
)
def test_missing_wrong_typed_or_out_of_range_fields_are_rejected(
    payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidPayloadError) as exc:
        validate_item(payload)
    assert exc.value.field == field
    assert field in exc.value.reason


def test_ten_megabyte_string_is_rejected_without_echoing_it() -> None:
    huge = "x" * (10 * 1024 * 1024)
    with pytest.raises(InvalidPayloadError) as exc:
        validate_item(with_(brand=huge))
    assert len(str(exc.value)) < 200


def test_oversize_payload_is_rejected_even_through_unknown_keys() -> None:
    with pytest.raises(InvalidPayloadError, match="bytes"):
        validate_item(with_(description="d" * MAX_PAYLOAD_BYTES))


def test_deeply_nested_payload_is_rejected_without_recursion_error() -> None:
    deep: Any = {}
    for _ in range(5000):
        deep = {"x": deep}
    with pytest.raises(InvalidPayloadError, match="nested"):
        validate_item(with_(extra=deep))


def test_reason_never_echoes_a_long_hostile_key() -> None:
    with pytest.raises(InvalidPayloadError) as exc:
        validate_item(with_(**{"$" + "k" * 10_000: 1}))
    assert len(exc.value.reason) < 120


# --- diff and $set ---------------------------------------------------------------


def test_diff_of_a_product_without_fields_is_everything() -> None:
    assert diff_fields({"_id": 1, "sku": "A"}, FIELDS) == FIELDS


def test_diff_of_an_enriched_product_is_empty() -> None:
    assert diff_fields({"_id": 1, **FIELDS, SYNCED_AT_FIELD: "then"}, FIELDS) == {}


def test_diff_holds_only_the_changed_fields() -> None:
    current = {"_id": 1, **FIELDS, "brand": "Old"}
    assert diff_fields(current, FIELDS) == {"brand": "Acme"}


@pytest.mark.parametrize("stored", [1250.0, "1250", True])
def test_diff_corrects_a_value_stored_with_another_type(stored: Any) -> None:
    desired = {"weight_grams": 1250 if stored is not True else 1}
    assert diff_fields({"weight_grams": stored}, desired) == desired


def test_diff_ignores_fields_outside_desired() -> None:
    assert diff_fields({"brand": "Acme", "price": 3}, {"brand": "Acme"}) == {}


def test_build_set_stamps_synced_at_only_when_something_changed() -> None:
    now = dt.datetime(2024, 4, 6, tzinfo=dt.UTC)
    assert build_set({}, now, SYNCED_AT_FIELD) == {}
    assert build_set({"brand": "Acme"}, now, SYNCED_AT_FIELD) == {
        "brand": "Acme",
        SYNCED_AT_FIELD: now,
    }


def test_build_set_never_contains_operators_or_the_id() -> None:
    out = build_set(validate_item(with_(name="x")), "now", SYNCED_AT_FIELD)
    assert not any(k.startswith("$") or "." in k or k == "_id" for k in out)


# --- hashing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ObjectId("65f0c0ffee0000000000abcd"), "oid:65f0c0ffee0000000000abcd"),
        (7, "int:7"),
        ("7", "str:7"),
        (True, "bool:true"),
        (1.5, "float:1.5"),
    ],
)
def test_typed_id_keeps_the_type(value: Any, expected: str) -> None:
    assert typed_id(value) == expected


def test_digest_distinguishes_ids_of_different_types_with_the_same_text() -> None:
    assert item_digest(7, FIELDS) != item_digest("7", FIELDS)
    oid = ObjectId("65f0c0ffee0000000000abcd")
    assert item_digest(oid, FIELDS) != item_digest(str(oid), FIELDS)


def test_digest_is_independent_of_key_order_and_stable() -> None:
    reordered = dict(reversed(list(FIELDS.items())))
    assert item_digest(1, FIELDS) == item_digest(1, reordered)
    assert len(item_digest(1, FIELDS)) == 64


@pytest.mark.parametrize(
    "changed",
    [{"brand": "Other"}, {"weight_grams": 1251}, {"weight_grams": 1250.0}, {"gtin": "12345678"}],
)
def test_digest_changes_when_a_field_changes(changed: dict[str, Any]) -> None:
    assert item_digest(1, FIELDS) != item_digest(1, {**FIELDS, **changed})


def test_digest_accepts_values_json_cannot_carry() -> None:
    assert len(item_digest(1, {"brand": dt.datetime(2024, 1, 1)})) == 64


def test_chain_extended_per_subchunk_equals_chain_over_the_whole_batch() -> None:
    items = [(i, {**FIELDS, "weight_grams": i + 1}) for i in range(10)]
    whole = chain_items(CHAIN_START, items)
    running = CHAIN_START
    for start in range(0, 10, 3):  # sub-chunks of 3, as a resumed batch would do
        running = chain_items(running, items[start : start + 3])
    assert running == whole


def test_chain_depends_on_order() -> None:
    a, b = item_digest(1, FIELDS), item_digest(2, FIELDS)
    assert chain_hash(chain_hash(CHAIN_START, a), b) != chain_hash(chain_hash(CHAIN_START, b), a)


# --- snapshots -------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        GOOD,
        with_(brand="x" * (10 * 1024 * 1024)),
        {"k" * 5000: 1},
        list(range(10_000)),
        {"$set": {"a.b": ObjectId()}},
        "plain text",
        None,
    ],
)
def test_snapshot_is_bounded_ascii(payload: Any) -> None:
    snap = payload_snapshot(payload, limit=2048)
    assert len(snap) <= 2048
    assert snap.isascii()


def test_small_snapshot_is_the_json_of_the_payload() -> None:
    assert json.loads(payload_snapshot(GOOD)) == GOOD


def test_snapshot_of_deep_nesting_does_not_blow_the_stack() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    assert len(payload_snapshot(deep, limit=300)) <= 300


def test_catalog_backfill_definition_validates_through_the_whitelist() -> None:
    assert CATALOG.name == "catalog"
    assert set(CATALOG.writes) == {"brand", "category", "gtin", "weight_grams"}
    assert validate_item(GOOD) == FIELDS
    with pytest.raises(InvalidPayloadError):
        validate_item(with_(**{"$set": 1}))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (with_(brand="Ac\ud800me"), "string that is not valid UTF-8"),
        (with_(category="\udfff"), "string that is not valid UTF-8"),
        (with_(name="harmless key, bad value \ud83d"), "string that is not valid UTF-8"),
        (with_(tags=["ok", {"deep": ["\ud800"]}]), "string that is not valid UTF-8"),
        (with_(**{"bad\ud800key": 1}), "key that is not valid UTF-8"),
        (with_(extra={"nested\udc00": "x"}), "key that is not valid UTF-8"),
        (with_(extra={"nul\x00key": "x"}), "key with NUL byte"),
        (with_(stock=2**63), "integer beyond 64 bits"),
        (with_(extra=[-(2**63) - 1]), "integer beyond 64 bits"),
        (with_(extra=10**40), "integer beyond 64 bits"),
    ],
)
def test_values_bson_cannot_store_are_rejected_anywhere(payload: Any, reason: str) -> None:
    with pytest.raises(InvalidPayloadError, match=reason) as exc:
        validate_item(payload)
    assert "\ud800" not in str(exc.value) and str(exc.value).isprintable()


def test_storable_edge_values_are_accepted() -> None:
    payload = with_(
        brand="Acme \U0001f600 ünï",  # a surrogate *pair* in JSON is one real character
        extra={"big": 2**63 - 1, "small": -(2**63), "ratio": 0.5, "none": None, "ok": True},
    )
    assert validate_item(payload) == {**FIELDS, "brand": "Acme \U0001f600 ünï"}
    assert validate_item(json.loads(json.dumps(payload))) == validate_item(payload)


def test_every_accepted_payload_encodes_as_bson() -> None:
    for payload in (GOOD, with_(extra={"a": [1, 2**62, "x", None, {"b": 1.5}]})):
        validate_item(payload)
        bson.encode(dict(payload))


@pytest.mark.parametrize(
    "payload",
    [
        {"score": float("nan"), "dims": {}},
        {"score": float("inf"), "dims": {}},
        {"score": float("-inf"), "dims": {}},
        {"score": 1.5, "dims": {"w": [1.0, float("nan")]}},
    ],
)
def test_nan_and_infinity_are_refused_not_rewritten_every_run(payload: dict[str, Any]) -> None:
    # NaN equals nothing, itself included: accepted, it would differ from itself on every run.
    with pytest.raises(InvalidPayloadError) as exc:
        validate_payload(payload, {"score": float, "dims": dict})
    assert "finite" in exc.value.reason


def test_finite_floats_and_nested_numbers_are_accepted() -> None:
    payload = {"score": 1.5, "dims": {"w": [1.0, 2]}}
    assert validate_payload(payload, {"score": float, "dims": dict}) == payload
