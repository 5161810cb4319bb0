"""CollectionSource against a real server: odd keys cost one document, never the batch."""

from __future__ import annotations

from pymongo.database import Database

from backfill_engine import CollectionSource
from backfill_engine.sources import SourceContext


def _fetch(db: Database, docs: list[dict]) -> object:
    source = CollectionSource("suppliers", key="code", local="supplier_id", fields=("name",))
    return source.fetch(docs, SourceContext(db, {}))


def test_an_array_or_document_key_quarantines_only_its_document(db: Database) -> None:
    db.suppliers.insert_many([{"code": "A", "name": "Acme"}, {"code": {"x": 1}, "name": "Doc"}])
    docs = [
        {"_id": 1, "supplier_id": "A"},
        {"_id": 2, "supplier_id": ["A", "B"]},  # an array key: unhashable, and $in would
        {"_id": 3, "supplier_id": {"x": 1}},  # match its elements; a document key is exact
    ]
    result = _fetch(db, docs)
    assert result.items[1] == {"name": "Acme"}
    assert 2 in result.errors and "array" in result.errors[2]
    assert result.items[3] == {"name": "Doc"}


def test_true_and_one_never_share_an_answer(db: Database) -> None:
    db.suppliers.insert_many([{"code": True, "name": "Yes"}, {"code": 1, "name": "One"}])
    docs = [{"_id": "t", "supplier_id": True}, {"_id": "o", "supplier_id": 1}]
    result = _fetch(db, docs)
    assert result.items == {"t": {"name": "Yes"}, "o": {"name": "One"}}
    assert not result.errors


def test_a_key_stored_as_another_numeric_type_is_not_a_match(db: Database) -> None:
    # The server's $in finds 1.0 for 1; a key of another BSON type is another key.
    db.suppliers.insert_one({"code": 1.0, "name": "Double"})
    result = _fetch(db, [{"_id": "o", "supplier_id": 1}])
    assert result.missing == ["o"] and not result.items


def test_a_field_mapping_gives_the_payload_our_names(db: Database) -> None:
    db.customers.insert_one({"code": "C1", "name": "Ada", "city": "Paris", "tier": 2})
    source = CollectionSource(
        "customers", key="code", local="customer_id", fields={"name": "customer_name"}
    )
    result = source.fetch([{"_id": 1, "customer_id": "C1"}], SourceContext(db, {}))
    assert result.items == {1: {"customer_name": "Ada"}}


def test_mapped_paths_read_theirs_nested_and_nest_ours(db: Database) -> None:
    db.customers.insert_one({"code": "C1", "address": {"city": "Paris", "zip": "75001"}})
    source = CollectionSource(
        "customers",
        key="code",
        local="customer_id",
        fields={"address.city": "customer.city", "code": "customer.code"},
    )
    result = source.fetch([{"_id": 1, "customer_id": "C1"}], SourceContext(db, {}))
    assert result.items == {1: {"customer": {"city": "Paris", "code": "C1"}}}


def test_a_source_stays_hashable_with_either_form_of_fields() -> None:
    source = CollectionSource("suppliers", key="code", local="supplier_id", fields=("name",))
    assert hash(source) == hash(
        CollectionSource("suppliers", key="code", local="supplier_id", fields=("name",))
    )
    mapped = CollectionSource("s", key="code", fields={"name": "supplier_name"})
    assert hash(mapped) == hash(CollectionSource("s", key="code", fields={"name": "supplier_name"}))
