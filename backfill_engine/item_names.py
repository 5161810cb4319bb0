"""Metadata names for the documents a backfill walks: `item_id` and `planning.items`.

The first releases named them after the one backfill they ran (`product_id` in the
quarantine with its unique index `job_product_unique`, and `planning.products` on jobs).
`ensure_item_names` renames what such a release wrote. It is idempotent, and once done
it costs one listIndexes per process:
- migration 20240409 runs it at deploy time, so `migrate status` shows it applied;
- every process that starts a job or runs batches runs it once first, so a backfill
  migration ordered before 20240409 (20240406 on a new database) finds the new names.
"""

from __future__ import annotations

import threading

from pymongo.database import Database

from backfill_engine.states import METADATA, QUARANTINE
from migrations.indexes import drop_indexes

ITEM_FIELD = "item_id"  # a quarantine entry's document id
ITEM_INDEX = "job_item_unique"  # one entry per (job, document)
OLD_FIELD, OLD_INDEX = "product_id", "job_product_unique"
OLD_PLANNED, PLANNED = "planning.products", "planning.items"

_checked: set[tuple[int, str]] = set()  # (client, database) this process has seen done
_lock = threading.Lock()


def ensure_item_names(db: Database, *, force: bool = False) -> bool:
    """Rename first-release metadata in `db`; True if anything had to change.

    Does nothing until the metadata migration (20240405) has given the quarantine its
    unique index, and asks again next time: a `migrate up` may be creating it right now.
    """
    key = (id(db.client), db.name)
    with _lock:
        if key in _checked and not force:
            return False
        names = {ix["name"] for ix in db[QUARANTINE].list_indexes()}  # none: no quarantine yet
        if not names & {OLD_INDEX, ITEM_INDEX}:
            return False
        changed = OLD_INDEX in names or ITEM_INDEX not in names
        if changed:
            _rename(db, names)
        _checked.add(key)
        return changed


def _rename(db: Database, seen: set[str]) -> None:
    """Rename to the generic names, given the quarantine indexes listed a moment ago.

    Other processes of this release may be renaming at the same time: every step is
    idempotent, and an old index another one dropped since `seen` was listed is no error.
    """
    quarantine = db[QUARANTINE]
    # The old unique index first: renamed entries would collide on its missing key.
    if OLD_INDEX in seen:
        drop_indexes(quarantine, OLD_INDEX)
    quarantine.update_many({OLD_FIELD: {"$exists": True}}, {"$rename": {OLD_FIELD: ITEM_FIELD}})
    db[METADATA].update_many(
        {"kind": "job", OLD_PLANNED: {"$exists": True}}, {"$rename": {OLD_PLANNED: PLANNED}}
    )
    quarantine.create_index([("job_id", 1), (ITEM_FIELD, 1)], name=ITEM_INDEX, unique=True)


def restore_first_release_names(db: Database) -> None:
    """The way back (migration 20240409 down), for a rollback to a first-release build."""
    quarantine = db[QUARANTINE]
    with _lock:
        drop_indexes(quarantine, ITEM_INDEX)
        quarantine.update_many(
            {ITEM_FIELD: {"$exists": True}}, {"$rename": {ITEM_FIELD: OLD_FIELD}}
        )
        db[METADATA].update_many(
            {"kind": "job", PLANNED: {"$exists": True}}, {"$rename": {PLANNED: OLD_PLANNED}}
        )
        quarantine.create_index([("job_id", 1), (OLD_FIELD, 1)], name=OLD_INDEX, unique=True)
        _checked.discard((id(db.client), db.name))
