"""schema()/index() builders produce the documented shapes; ensure_collection against the server."""

from __future__ import annotations

import pymongo
import pytest
from bson import SON
from pymongo import IndexModel
from pymongo.database import Database
from pymongo.errors import OperationFailure, WriteError

from backfill_migrations import (
    IndexBuilder,
    SchemaBuilder,
    asc,
    create_indexes,
    desc,
    drop_indexes,
    ensure_collection,
    index,
    schema,
    text,
    with_validation_level,
    with_validator,
)

S = SchemaBuilder


def test_root_schema_builds_a_json_schema_validator() -> None:
    built = (
        schema()
        .bson_type("object")
        .required("name")
        .properties({"name": S.string(), "qty": S.int()})
        .field("tags", S.array(S.string()))
        .field("at", S.date(), required=True)
        .build()
    )
    assert built == {
        "$jsonSchema": {
            "bsonType": "object",
            "required": ["name", "at"],
            "properties": {
                "name": {"bsonType": "string"},
                "qty": {"bsonType": "int"},
                "tags": {"bsonType": "array", "items": {"bsonType": "string"}},
                "at": {"bsonType": "date"},
            },
        }
    }


def test_nested_builders_build_the_plain_schema() -> None:
    assert S.string().build() == {"bsonType": "string"}
    assert S.long().build() == {"bsonType": "long"}
    assert S.bool().build() == {"bsonType": "bool"}
    assert S.date().build() == {"bsonType": "date"}
    assert S.object({"n": S.int()}).build() == {
        "bsonType": "object",
        "properties": {"n": {"bsonType": "int"}},
    }
    assert S.array().build() == {"bsonType": "array"}
    assert S().bson_type("int", "long").minimum(1).build() == {
        "bsonType": ["int", "long"],
        "minimum": 1,
    }
    assert S().enum(["a", "b"]).build() == {"enum": ["a", "b"]}


def test_a_schema_builder_nests_inside_another_unwrapped() -> None:
    inner = schema().bson_type("object").field("x", S.string(), required=True)
    outer = schema().field("inner", inner).build()
    assert outer == {
        "$jsonSchema": {
            "properties": {
                "inner": {
                    "bsonType": "object",
                    "required": ["x"],
                    "properties": {"x": {"bsonType": "string"}},
                }
            }
        }
    }


def test_required_keeps_order_without_duplicates() -> None:
    built = schema().required("a", "b").required("a", "c").build()
    assert built == {"$jsonSchema": {"required": ["a", "b", "c"]}}


def test_key_helpers_return_key_lists() -> None:
    assert asc("a", "b") == [("a", 1), ("b", 1)]
    assert desc("a") == [("a", -1)]
    assert text("body") == [("body", "text")]


def test_index_builder_builds_an_index_model() -> None:
    model = (
        index(asc("job_id") + desc("batch_no"))
        .name("job_batch")
        .unique()
        .partial({"kind": "batch"})
        .build()
    )
    assert isinstance(model, IndexModel)
    assert model.document == {
        "key": SON([("job_id", 1), ("batch_no", -1)]),
        "name": "job_batch",
        "unique": True,
        "partialFilterExpression": {"kind": "batch"},
    }
    assert index("seen_at").ttl(3600).sparse().build().document == {
        "key": SON([("seen_at", 1)]),
        "name": "seen_at_1",
        "expireAfterSeconds": 3600,
        "sparse": True,
    }
    assert isinstance(index("a"), IndexBuilder)


def test_ensure_collection_creates_then_is_idempotent(db: Database) -> None:
    validator = schema().bson_type("object").field("name", S.string(), required=True)
    for _ in range(3):
        coll = ensure_collection(db, "things", with_validator(validator))
    assert db.list_collection_names() == ["things"]
    options = coll.options()
    assert options["validator"] == validator.build()
    coll.insert_one({"name": "ok"})
    with pytest.raises(WriteError):
        coll.insert_one({"name": 42})
    with pytest.raises(WriteError):
        coll.insert_one({"other": "x"})
    assert coll.count_documents({}) == 1


def test_ensure_collection_applies_a_validator_to_an_existing_collection(db: Database) -> None:
    db.create_collection("things")
    db.things.insert_one({"name": "before"})
    coll = ensure_collection(
        db,
        "things",
        with_validator(schema().field("name", S.string(), required=True)),
        with_validation_level("strict"),
    )
    with pytest.raises(WriteError):
        coll.insert_one({"nope": 1})
    assert coll.options()["validator"]["$jsonSchema"]["required"] == ["name"]


def test_ensure_collection_does_not_swallow_errors(db: Database) -> None:
    with pytest.raises(OperationFailure):
        ensure_collection(db, "fresh", with_validator({"$nonsense": 1}))
    db.create_collection("existing")
    with pytest.raises(OperationFailure):
        ensure_collection(db, "existing", with_validator({"$nonsense": 1}))


def test_bad_validation_level_is_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="validation level"):
        with_validation_level("sometimes")


def test_create_and_drop_indexes_and_missing_ones_are_fine(db: Database) -> None:
    names = create_indexes(
        db.items,
        index(asc("sku")).name("sku_unique").unique(),
        IndexModel([("a", pymongo.ASCENDING), ("b", pymongo.DESCENDING)], name="a_b"),
    )
    assert names == ["sku_unique", "a_b"]
    create_indexes(db.items, index(asc("sku")).name("sku_unique").unique())  # idempotent
    assert {"sku_unique", "a_b"} <= set(db.items.index_information())
    drop_indexes(db.items, "sku_unique", index(asc("a")).name("a_b"), "never_existed")
    assert set(db.items.index_information()) == {"_id_"}
    drop_indexes(db.no_such_collection, "whatever")
