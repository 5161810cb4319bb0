"""Fields a revert left alone, with what they held before, what the job wrote and hold now.

One document per revert job, document and field (`backfill_revert_conflicts`), upserted
by that key so a re-delivered revert batch records each conflict once. `backfill conflicts
REVJOB` lists them; `backfill status REVJOB` counts them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database

from backfill_engine import paths
from backfill_engine.journal import Change
from backfill_engine.store import now_utc

CONFLICTS = "backfill_revert_conflicts"
CONFLICT_INDEX = "conflict_job_item_field"

_ensured: set[tuple[int, str]] = set()
_lock = threading.Lock()


def ensure_conflicts(db: Database) -> None:
    """The unique (job, item, field) index; idempotent, once per process and database."""
    key = (id(db.client), db.name)
    with _lock:
        if key in _ensured:
            return
        db[CONFLICTS].create_index(
            [("job_id", 1), ("item_id", 1), ("field", 1)], name=CONFLICT_INDEX, unique=True
        )
        _ensured.add(key)


def conflict_entry(
    pid: Any, field: str, change: Change, why: str, current: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One left field: `before` (or `before_absent`), `written`, and `current` (or absent)."""
    entry: dict[str, Any] = {"item_id": pid, "field": field, "reason": why, "written": change.wrote}
    if change.had:
        entry["before"] = change.before
    else:
        entry["before_absent"] = True
    found, value = paths.lookup(current or {}, field)
    if found:
        entry["current"] = value
    else:
        entry["current_absent"] = True
    return entry


def write_conflicts(
    db: Database, job_id: str, reverts: str, batch_no: int, entries: list[dict[str, Any]]
) -> None:
    """Upsert a sub-chunk's conflicts for revert job `job_id` (of job `reverts`)."""
    if not entries:
        return
    ensure_conflicts(db)
    now = now_utc()
    ops = [
        # Replaced whole: a redelivery records the field as it finds it now.
        ReplaceOne(
            {"job_id": job_id, "item_id": e["item_id"], "field": e["field"]},
            {**e, "job_id": job_id, "reverts": reverts, "batch_no": batch_no, "at": now},
            upsert=True,
        )
        for e in entries
    ]
    db[CONFLICTS].bulk_write(ops, ordered=False)


def iter_conflicts(db: Database, job_id: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The revert job's conflicts by item id and field, streamed."""
    found = db[CONFLICTS].find({"job_id": job_id}, {"_id": 0}).sort([("item_id", 1), ("field", 1)])
    return iter(found if limit is None else found.limit(limit))


def count_conflicts(db: Database, job_id: str) -> int:
    return db[CONFLICTS].count_documents({"job_id": job_id})
