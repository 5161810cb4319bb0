"""A server's refusal reaches the operator as one short line, not as its whole reply."""

from __future__ import annotations

import pymongo
import pytest
from pymongo.database import Database

from orchestrator.errors import mongo_error_line


def test_a_rejected_bulk_insert_is_its_first_error_and_a_count(db: Database) -> None:
    db.create_collection("strict", validator={"$jsonSchema": {"required": ["catalog"]}})
    docs = [{"_id": i, "sku": f"SKU-{i}", "pad": "x" * 200} for i in range(40)]
    with pytest.raises(pymongo.errors.BulkWriteError) as caught:
        db["strict"].insert_many(docs, ordered=False)
    assert len(str(caught.value)) > 2000  # what the CLI used to cut to 300 characters

    line = mongo_error_line(caught.value)

    assert "\n" not in line and len(line) <= 300
    assert "(code 121; 40 documents rejected)" in line
    assert "SKU-" not in line  # no document of the reply


def test_an_operation_failure_keeps_its_message_and_drops_the_reply(db: Database) -> None:
    with pytest.raises(pymongo.errors.OperationFailure) as caught:
        db.command({"noSuchCommandAnywhere": 1})
    assert "full error" in str(caught.value)

    line = mongo_error_line(caught.value)

    assert line and "full error" not in line and "{" not in line
