"""The before-image journal's pure core (entries, splitting, merging, restore plans) and its
indexes on a real server."""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import pytest
from pymongo.database import Database

from backfill_engine import journal
from backfill_engine.journal import (
    JOURNAL,
    JOURNAL_DOC_BYTES,
    TTL_INDEX,
    Change,
    RevertCounts,
    before_image,
    ensure_journal,
    journal_docs,
    merge,
    plan_restore,
)
from backfill_engine.settings import DEFAULT_JOURNAL_DAYS, Settings, SettingsError

NOW = dt.datetime(2026, 12, 2, 12, 0, 0)


def test_before_image_tells_null_from_absent_and_keeps_only_written_fields() -> None:
    current = {"_id": 1, "brand": None, "category": "toys", "sku": "S1"}
    e = before_image(1, current, {"brand": "Acme", "gtin": "123", "synced": NOW})
    assert e == {
        "_id": 1,
        "before": {"brand": None},
        "absent": ["gtin", "synced"],
        "wrote": {"brand": "Acme", "gtin": "123", "synced": NOW},
    }


def test_a_sub_chunk_is_one_journal_document_unless_it_outgrows_the_limit() -> None:
    small = [before_image(i, {}, {"gtin": "1" * 13}) for i in range(1000)]
    (doc,) = journal_docs("job", 3, 7, small, NOW)
    assert (doc["job_id"], doc["batch_no"], doc["token"], doc["created_at"]) == ("job", 3, 7, NOW)
    assert len(doc["docs"]) == 1000
    big_value = "x" * (3 * 1024 * 1024)  # what the application stored before
    big = [before_image(i, {"brand": big_value}, {"brand": "Acme"}) for i in range(5)]
    docs = journal_docs("job", 3, 7, big, NOW)
    assert len(docs) == 3 and [d["part"] for d in docs] == [0, 1, 2]
    assert sum(len(d["docs"]) for d in docs) == 5
    assert all(len(bson.encode(d)) < JOURNAL_DOC_BYTES for d in docs)


def test_an_entry_too_large_to_journal_keeps_no_before_image_and_is_never_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(journal, "MAX_ENTRY_BYTES", 1000)
    (doc,) = journal_docs(
        "job", 1, 1, [before_image(1, {"brand": "x" * 2000}, {"brand": "A"})], NOW
    )
    (entry,) = doc["docs"]
    assert entry["lost"] is True and entry["before"] == {}
    counts = RevertCounts()
    changes = merge(doc["docs"])[1]
    assert plan_restore(1, {"_id": 1, "brand": "A"}, changes, counts) is None
    assert counts.unrestorable == 1


def _e(
    pid: Any, before: dict[str, Any], absent: list[str], wrote: dict[str, Any]
) -> dict[str, Any]:
    return {"_id": pid, "before": before, "absent": absent, "wrote": wrote}


def test_a_redelivery_after_a_landed_write_keeps_the_first_before_image() -> None:
    got = merge([_e(1, {"b": "A"}, [], {"b": "B"}), _e(1, {"b": "B"}, [], {"b": "C"})])
    assert got[1]["b"] == Change(True, "A", "C")


def test_a_redelivery_after_a_write_that_never_landed_keeps_what_was_really_there() -> None:
    # The first delivery journaled, then died before its write; meanwhile the application
    # changed the value: the second delivery overwrote "X", so "X" is what undo restores.
    got = merge([_e(1, {}, ["b"], {"b": "B"}), _e(1, {"b": "X"}, [], {"b": "B"})])
    assert got[1]["b"] == Change(True, "X", "B")
    again = merge([_e(1, {}, ["b"], {"b": "B"}), _e(1, {}, ["b"], {"b": "B"})])
    assert again[1]["b"] == Change(False, None, "B")


def test_type_exact_comparison_int_float_null_absent() -> None:
    changes = {
        "w": Change(True, 7, 500),  # was int 7
        "x": Change(True, 7.0, 500),  # was double 7.0
        "n": Change(True, None, "A"),  # was null
        "g": Change(False, None, "G"),  # was absent
        "c": Change(False, None, 3),  # the job wrote int 3; now double 3.0: changed since
    }
    counts = RevertCounts()
    current = {"_id": 1, "w": 500, "x": 500, "n": "A", "g": "G", "c": 3.0}
    op = plan_restore(1, current, changes, counts)
    assert op is not None
    assert op._doc == {"$set": {"w": 7, "x": 7.0, "n": None}, "$unset": {"g": ""}}
    guard = op._filter
    assert guard["_id"] == 1 and set(guard) == {"_id", "w", "x", "n", "g"}
    assert guard["w"] == {"$eq": 500, "$type": 16}  # int32, as the job wrote it
    assert bson.decode(bson.encode(op._doc["$set"]))["x"].__class__ is float
    assert counts.conflicts == 1 and counts.already == 0


def test_already_restored_and_deleted_documents() -> None:
    changes = {"b": Change(True, "A", "B"), "g": Change(False, None, "G")}
    counts = RevertCounts()
    assert plan_restore(1, {"_id": 1, "b": "A"}, changes, counts) is None
    assert (counts.already, counts.conflicts) == (2, 0)
    gone = RevertCounts()
    assert plan_restore(1, None, changes, gone) is None
    assert gone.conflicts == 2


def test_journal_days_setting() -> None:
    assert Settings.from_env({}).journal_days == DEFAULT_JOURNAL_DAYS == 30
    assert Settings.from_env({"BACKFILL_JOURNAL_DAYS": "7"}).journal_days == 7
    assert (
        Settings.from_env({"BACKFILL_JOURNAL_DAYS": "7"}).to_env()["BACKFILL_JOURNAL_DAYS"] == "7"
    )
    for bad in ("0", "-3", "seven", "1.5"):
        with pytest.raises(SettingsError, match="BACKFILL_JOURNAL_DAYS"):
            Settings.from_env({"BACKFILL_JOURNAL_DAYS": bad})


def test_ensure_journal_creates_the_ttl_index_and_follows_the_retention(db: Database) -> None:
    ensure_journal(db, 30)
    ensure_journal(db, 30)  # idempotent
    ttl = {ix["name"]: ix for ix in db[JOURNAL].list_indexes()}[TTL_INDEX]
    assert ttl["expireAfterSeconds"] == 30 * 86_400 and dict(ttl["key"]) == {"created_at": 1}
    ensure_journal(db, 7)
    ttl = {ix["name"]: ix for ix in db[JOURNAL].list_indexes()}[TTL_INDEX]
    assert ttl["expireAfterSeconds"] == 7 * 86_400
