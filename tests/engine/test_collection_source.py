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
