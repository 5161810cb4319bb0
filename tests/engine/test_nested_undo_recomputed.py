"""Undo without a journal of a pure-function backfill writing one nested leaf (real server)."""

from __future__ import annotations

import datetime as dt

from pymongo.database import Database

from backfill_engine import Backfill, FunctionSource
from backfill_engine.unjournaled import recomputable, undo_recomputed

T0 = dt.datetime(2026, 12, 1, 12, 0, 0)
STAMP = T0 + dt.timedelta(minutes=1)

WEIGHT = Backfill(
    name="weight-g",
    collection="items",
    reads=("spec.weight_kg",),
    source=FunctionSource(
        lambda doc, params: {"dims": {"g": int(doc["spec"]["weight_kg"] * 1000)}}
    ),
    writes={"dims.g": int},
    synced_field="weight_at",
)


def test_only_the_leaf_still_equal_to_the_recomputed_value_is_unset(db: Database) -> None:
    db.items.insert_many(
        [
            {"_id": 1, "spec": {"weight_kg": 2}, "dims": {"g": 2000, "h": 1}, "weight_at": STAMP},
            {"_id": 2, "spec": {"weight_kg": 2}, "dims": {"g": 1999, "h": 1}, "weight_at": STAMP},
        ]
    )
    assert recomputable(WEIGHT)
    job = {"_id": "j", "created_at": T0, "finished_at": T0 + dt.timedelta(hours=1)}
    counts = undo_recomputed(db, WEIGHT, job)
    assert (counts.restored, counts.conflicts) == (1, 1)
    assert db.items.find_one({"_id": 1}) == {"_id": 1, "spec": {"weight_kg": 2}, "dims": {"h": 1}}
    assert db.items.find_one({"_id": 2})["dims"] == {"g": 1999, "h": 1}  # changed since: kept
