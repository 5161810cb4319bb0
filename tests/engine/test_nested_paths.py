"""Dotted paths in `reads` and `writes`, pure: validation, diff, `$set`, decisions, hashing,
definition errors, projections and the journal's leaf-only before-images and restores."""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import pytest

from backfill_engine import Backfill, DefinitionError, FunctionSource
from backfill_engine.decide import Outcome, decide
from backfill_engine.journal import (
    Change,
    RevertCounts,
    before_image,
    journal_docs,
    merge,
    plan_restore,
)
from backfill_engine.payload import InvalidPayloadError, build_set, diff_fields, item_digest
from backfill_engine.sources import SourceResult
from backfill_engine.validate import validate_payload

NOW = dt.datetime(2026, 12, 2, 12, 0, 0)
WRITES = {"dimensions.weight_g": int, "dimensions.unit": str}


def _backfill(**kw: Any) -> Backfill:
    base: dict[str, Any] = {
        "name": "weights",
        "collection": "items",
        "source": FunctionSource(lambda doc, params: None),
        "writes": WRITES,
        "reads": ("spec.weight_kg",),
    }
    return Backfill(**{**base, **kw})


# --- validation --------------------------------------------------------------------------


def test_a_nested_payload_answers_dotted_writes_keyed_by_the_path() -> None:
    payload = {"dimensions": {"weight_g": 5, "unit": "g", "extra": 1}, "other": "x"}
    assert validate_payload(payload, WRITES) == {"dimensions.weight_g": 5, "dimensions.unit": "g"}


def test_a_flat_dotted_payload_key_stays_hostile() -> None:
    with pytest.raises(InvalidPayloadError, match="dotted key"):
        validate_payload({"dimensions.weight_g": 5, "dimensions.unit": "g"}, WRITES)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"dimensions": {"weight_g": True, "unit": "g"}}, "dimensions.weight_g must be int"),
        ({"dimensions": {"weight_g": 5.0, "unit": "g"}}, "dimensions.weight_g must be int"),
        ({"dimensions": {"unit": "g"}}, "missing field dimensions.weight_g"),
        ({"weight_g": 5}, "missing field dimensions.weight_g"),
        ({"dimensions": "n/a"}, "dimensions is str, not an object"),
        ({"dimensions": [{"weight_g": 5}]}, "dimensions is an array"),
        ({"dimensions": {"weight_g": 5, "unit": "g", "$set": 1}}, "operator-like key"),
        ({"dimensions": {"weight_g": 5, "unit": "g", "a.b": 1}}, "dotted key"),
        ({"dimensions": {"weight_g": 5, "unit": "g", "_id": 1}}, "key '_id'"),
        ({"dimensions": {"weight_g": 5, "unit": " "}}, "dimensions.unit is empty"),
    ],
)
def test_the_leaf_gets_the_exact_type_and_hostile_keys_are_refused(
    payload: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidPayloadError, match=reason):
        validate_payload(payload, WRITES)


# --- diff and $set -----------------------------------------------------------------------


def test_diff_compares_the_leaf_by_exact_type() -> None:
    desired = {"dimensions.weight_g": 5, "dimensions.unit": "g"}
    same = {"_id": 1, "dimensions": {"weight_g": 5, "unit": "g", "height": 3}}
    assert diff_fields(same, desired) == {}
    as_double = {"_id": 1, "dimensions": {"weight_g": 5.0, "unit": "g"}}
    assert diff_fields(as_double, desired) == {"dimensions.weight_g": 5}
    assert diff_fields({"_id": 1}, desired) == desired
    assert diff_fields({"_id": 1, "dimensions": {"weight_g": None}}, desired) == desired


def test_build_set_writes_the_leaf_never_the_parent() -> None:
    written = build_set({"dimensions.weight_g": 5}, NOW, "synced_at")
    assert written == {"dimensions.weight_g": 5, "synced_at": NOW}


# --- decisions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parent", "said"),
    [
        ("n/a", "dimensions is str"),
        ([1, 2], "dimensions is an array"),
        (None, "dimensions is null"),
    ],
)
def test_a_parent_that_is_not_a_document_holds_that_document_as_invalid(
    parent: Any, said: str
) -> None:
    answer = SourceResult(items={1: {"dimensions": {"weight_g": 5, "unit": "g"}}})
    d = decide(_backfill(), 1, {"_id": 1, "dimensions": parent}, answer)
    assert d.outcome is Outcome.INVALID and d.error_class == "ParentNotDocument"
    assert d.error is not None and said in d.error and "dimensions.weight_g" in d.error


def test_a_deeper_blocked_parent_is_named() -> None:
    b = _backfill(writes={"spec.size.w": int})
    answer = SourceResult(items={1: {"spec": {"size": {"w": 5}}}})
    d = decide(b, 1, {"_id": 1, "spec": {"size": 7}}, answer)
    assert d.outcome is Outcome.INVALID and d.error is not None
    assert d.error.startswith("spec.size is int, not a document")
    created = decide(b, 1, {"_id": 1, "spec": {"other": 1}}, answer)
    assert created.outcome is Outcome.WRITE and created.diff == {"spec.size.w": 5}


def test_a_document_already_right_is_unchanged() -> None:
    answer = SourceResult(items={1: {"dimensions": {"weight_g": 5, "unit": "g"}}})
    current = {"_id": 1, "dimensions": {"weight_g": 5, "unit": "g", "height": 2}}
    assert decide(_backfill(), 1, current, answer).outcome is Outcome.UNCHANGED


# --- hashing -----------------------------------------------------------------------------


def test_the_digest_of_what_was_written_equals_the_digest_verify_rebuilds() -> None:
    fields = validate_payload({"dimensions": {"unit": "g", "weight_g": 5}}, WRITES)
    from backfill_engine import paths

    stored = {"_id": 1, "dimensions": {"weight_g": 5, "height": 9, "unit": "g"}}
    rebuilt = {name: paths.get(stored, name) for name in WRITES}
    assert item_digest(1, fields) == item_digest(1, rebuilt)
    assert item_digest(1, fields) != item_digest(1, {**rebuilt, "dimensions.weight_g": 5.0})


# --- definitions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "said"),
    [
        ({"writes": {"dimensions..weight_g": int}}, "empty segment"),
        ({"writes": {".weight_g": int}}, "empty segment"),
        ({"writes": {"dimensions.": int}}, "empty segment"),
        ({"writes": {"dimensions.$set": int}}, "operator segment '$set'"),
        ({"writes": {"$set": int}}, "operator segment"),
        ({"writes": {"_id": int}}, "_id"),
        ({"writes": {"_id.part": int}}, "_id"),
        ({"reads": ("_id.x",)}, "_id"),
        ({"reads": ("spec..x",)}, "empty segment"),
        ({"writes": {"items.0.price": int}}, "not a field name"),
        ({"writes": {"dimensions": dict, "dimensions.weight_g": int}}, "overlap"),
        ({"writes": {"a.b": int, "a.b.c": int}}, "overlap"),
        ({"writes": {"stamp.x": int}, "synced_field": "stamp"}, "overlaps the synced_field"),
        ({"writes": {"stamp": int}, "synced_field": "stamp"}, "overlaps the synced_field"),
        ({"synced_field": "meta.synced"}, "top-level field name"),
        ({"writes": {".".join(["a"] * 17): int}}, "more than 16 segments"),
    ],
)
def test_bad_paths_are_refused_at_definition_time(kw: dict[str, Any], said: str) -> None:
    with pytest.raises(DefinitionError, match="weights") as err:
        _backfill(**kw)
    assert said in str(err.value) and "\n" not in str(err.value)


def test_siblings_under_one_parent_and_reads_under_a_write_are_fine() -> None:
    b = _backfill(
        writes={"dimensions.weight_g": int, "dimensions.unit": str, "dims": int},
        reads=("dimensions.height", "spec.weight_kg", "spec"),
    )
    # A dotted write reads its top-level field (to see a parent that is not a document);
    # a path under another projected one is left out (MongoDB refuses the collision).
    assert b.projection == {"dimensions": 1, "dims": 1, "spec": 1}
    assert _backfill(reads=("spec.weight_kg",), writes={"w": int}).projection == {
        "w": 1,
        "spec.weight_kg": 1,
    }


# --- journal -----------------------------------------------------------------------------


def test_the_journal_keeps_the_leaf_before_image_nested_null_and_absent_apart() -> None:
    current = {"_id": 1, "dimensions": {"weight_g": 7, "unit": None, "height": 3}}
    written = {"dimensions.weight_g": 5, "dimensions.unit": "g", "dimensions.w2": 1, "at": NOW}
    e = before_image(1, current, written)
    assert e["before"] == {"dimensions": {"weight_g": 7, "unit": None}}
    assert e["absent"] == ["dimensions.w2", "at"]
    assert e["wrote"] == {"dimensions": {"weight_g": 5, "unit": "g", "w2": 1}, "at": NOW}
    assert e["paths"] == list(written)
    (doc,) = journal_docs("job", 1, 1, [e], NOW)
    assert not _dotted_keys(bson.decode(bson.encode(doc)))  # storable on any MongoDB
    changes = merge(doc["docs"])[1]
    assert changes["dimensions.weight_g"] == Change(True, 7, 5)
    assert changes["dimensions.unit"] == Change(True, None, "g")
    assert changes["dimensions.w2"] == Change(False, None, 1)


def test_the_journal_of_a_document_without_the_parent_names_the_leaf_absent() -> None:
    e = before_image(1, {"_id": 1}, {"dimensions.weight_g": 5})
    assert e["before"] == {} and e["absent"] == ["dimensions.weight_g"]
    assert merge([e])[1]["dimensions.weight_g"] == Change(False, None, 5)


def _dotted_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k in value if "." in k] + [k for v in value.values() for k in _dotted_keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _dotted_keys(v)]
    return []


def test_restore_sets_or_unsets_the_leaf_only_with_a_type_exact_guard() -> None:
    changes = {
        "dimensions.weight_g": Change(True, 7, 5),
        "dimensions.unit": Change(True, None, "g"),
        "dimensions.w2": Change(False, None, 1),
        "size.h": Change(True, 2.0, 3),
    }
    current = {"_id": 1, "dimensions": {"weight_g": 5, "unit": "g", "w2": 1}, "size": {"h": 3}}
    counts = RevertCounts()
    op = plan_restore(1, current, changes, counts)
    assert op is not None
    assert op._doc == {
        "$set": {"dimensions.weight_g": 7, "dimensions.unit": None, "size.h": 2.0},
        "$unset": {"dimensions.w2": ""},
    }
    assert op._filter["dimensions.weight_g"] == {"$eq": 5, "$type": 16}
    assert op._filter["dimensions"] == {"$not": {"$type": "array"}}
    assert bson.decode(bson.encode(op._doc["$set"]))["size.h"].__class__ is float


def test_a_leaf_changed_since_or_under_a_parent_gone_scalar_is_a_conflict() -> None:
    changes = {"dimensions.weight_g": Change(True, 7, 5)}
    counts = RevertCounts()
    assert plan_restore(1, {"_id": 1, "dimensions": {"weight_g": 6}}, changes, counts) is None
    assert plan_restore(1, {"_id": 1, "dimensions": "n/a"}, changes, counts) is None
    assert counts.conflicts == 2
    back = RevertCounts()
    assert plan_restore(1, {"_id": 1, "dimensions": {"weight_g": 7}}, changes, back) is None
    assert back.already == 1
