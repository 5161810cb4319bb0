"""The engine's own collections: created and upgraded here, on first use, by any process.

`ensure_schema(db)` runs once per process and database before a command or worker touches
the metadata (`backfill` CLI verbs, `launch`, a worker's runtime); afterwards it costs a
set lookup. It creates `backfill_metadata` (jobs and batches, with its validator and
indexes), `backfill_batch_ids`, `backfill_quarantine` and the notices' indexes; every step
is idempotent, so processes starting together on a new database all succeed. A team's
database needs none of this project's migrations; migration 20240405 calls this code.

The layout has a version, recorded in `backfill_schema` (one document, `_id` "engine"):
- 1: the first release's names: quarantine entries keyed by `product_id` (unique index
  `job_product_unique`), jobs counting `planning.products`. That release records nothing.
- 2: generic names: `item_id` (unique index `job_item_unique`) and `planning.items`.
Upgrades run only here, never in the write path. A database recorded at a version above
this release's refuses this release, and one that migration 20240409 took back down to 1
refuses it too (until `backfill migrate up` brings it forward): each in one line, since
writing with the other release's names is what collides.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from backfill_engine.ddl import create_indexes, drop_indexes, ensure_collection
from backfill_engine.errors import BackfillError
from backfill_engine.journal import ensure_journal
from backfill_engine.notify import NOTIFICATIONS
from backfill_engine.states import (
    BATCH_IDS,
    COUNTER_NAMES,
    METADATA,
    QUARANTINE,
    BatchStatus,
    JobStatus,
)

log = logging.getLogger(__name__)

SCHEMA = "backfill_schema"  # one document: the version of the layout below
SCHEMA_ID = "engine"
SCHEMA_VERSION = 2  # what this release reads and writes
FIRST_RELEASE = 1  # the names the first release wrote (it recorded no version)
DOWN_MIGRATION = "20240409_generic_item_names"  # the migration whose down goes back to 1

ITEM_FIELD = "item_id"  # a quarantine entry's document id
ITEM_INDEX = "job_item_unique"  # one entry per (job, document)
OLD_FIELD, OLD_INDEX = "product_id", "job_product_unique"
OLD_PLANNED, PLANNED = "planning.products", "planning.items"

NOTICE_KEEP_SECONDS = 30 * 86_400  # delivered or abandoned notices expire (a TTL index)

ENGINE_COLLECTIONS = frozenset({METADATA, QUARANTINE, BATCH_IDS, NOTIFICATIONS})
# Indexes an earlier layout had and this one dropped: a historical migration that still
# names one (20240405 names `job_product_unique`) must not bring it back.
RETIRED_INDEXES = {QUARANTINE: frozenset({OLD_INDEX})}


class SchemaMismatchError(BackfillError):
    """The metadata in the database is not the layout this release reads and writes."""

    def __init__(self, database: str, found: int, reason: str) -> None:
        self.database, self.found = database, found
        super().__init__(
            f"backfill metadata in database {database!r} is at schema version {found}, "
            f"this release uses {SCHEMA_VERSION}: {reason}"
        )


def _whole(minimum: int) -> dict[str, Any]:
    # Python ints arrive as int32 or int64 depending on size: accept both.
    return {"bsonType": ["int", "long"], "minimum": minimum}


def metadata_validator() -> dict[str, Any]:
    """One schema for jobs and batches: `kind` required, other fields typed when present.

    The same document migration 20240405 builds with its schema builder (a test holds them
    equal): either one may apply it last.
    """
    statuses = sorted({s.value for s in JobStatus} | {s.value for s in BatchStatus})
    properties: dict[str, Any] = {
        "_id": {"bsonType": "string"},
        "kind": {"enum": ["job", "batch"]},
        "status": {"bsonType": "string", "enum": statuses},
        # job fields
        "backfill": {"bsonType": "string"},
        "batch_size": _whole(1),
        "max_in_flight": _whole(1),
        "created_at": {"bsonType": "date"},
        "updated_at": {"bsonType": "date"},
        # batch fields
        "job_id": {"bsonType": "string"},
        "batch_no": _whole(0),
        "size": _whole(1),
        "attempts": _whole(0),
        "fencing_token": _whole(0),
        "counters": {
            "bsonType": "object",
            "properties": {n: _whole(0) for n in COUNTER_NAMES},
        },
        "active_key": {"bsonType": "string"},
    }
    return {
        "$jsonSchema": {
            "bsonType": "object",
            "required": ["_id", "kind"],
            "properties": properties,
        }
    }


def _asc(*fields: str) -> list[tuple[str, int]]:
    return [(f, ASCENDING) for f in fields]


METADATA_INDEXES = [
    IndexModel(
        _asc("job_id", "batch_no"),
        name="job_batch_no_unique",
        unique=True,
        partialFilterExpression={"kind": "batch"},
    ),
    IndexModel(_asc("job_id", "status"), name="job_status"),
    IndexModel(_asc("kind", "status"), name="kind_status"),
    # One active job per backfill: the job holds active_key = backfill name until it ends.
    IndexModel(
        _asc("active_key"),
        name="active_key_unique",
        unique=True,
        partialFilterExpression={"active_key": {"$exists": True}},
    ),
]
QUARANTINE_INDEXES = [IndexModel(_asc("job_id", "replayed"), name="job_replayed")]
ITEM_INDEXES = [IndexModel(_asc("job_id", ITEM_FIELD), name=ITEM_INDEX, unique=True)]
FIRST_RELEASE_INDEXES = [IndexModel(_asc("job_id", OLD_FIELD), name=OLD_INDEX, unique=True)]
NOTICE_INDEXES = [
    IndexModel(_asc("state", "next_at")),
    IndexModel(_asc("job_id", "event")),
    IndexModel(_asc("created_at"), expireAfterSeconds=NOTICE_KEEP_SECONDS),
]

_ensured: set[tuple[int, str]] = set()  # (client, database) this process has set up
_lock = threading.Lock()


def _key(db: Database) -> tuple[int, str]:
    return (id(db.client), db.name)


def ensure_schema(db: Database, *, force: bool = False, upgrade_from_down: bool = False) -> None:
    """Create the engine's collections and bring them to SCHEMA_VERSION; once per process.

    Raises SchemaMismatchError (changing nothing recorded) when the database is recorded at
    another release's version. `upgrade_from_down` is for a deliberate move forward
    (`backfill migrate up`, migration 20240409): it upgrades a database 20240409 took down.
    `force` asks the database again even if this process has set it up before.
    """
    with _lock:
        if _key(db) in _ensured and not force:
            return
        fresh = METADATA not in db.list_collection_names(filter={"name": METADATA})
        record, found = _read_record(db)
        # Refused before anything is created or changed: the layout is the other release's.
        if found > SCHEMA_VERSION:
            raise SchemaMismatchError(
                db.name, found, "run the release that wrote it (this one is older)"
            )
        # A record left behind by a layout dropped since (20240405 down) binds nothing.
        if found < SCHEMA_VERSION and record and not fresh and not upgrade_from_down:
            raise SchemaMismatchError(
                db.name,
                found,
                f"migration {DOWN_MIGRATION} took it back for the earlier release; "
                "run that release, or `backfill migrate up` to bring it forward",
            )
        _create_layout(db)
        if found < SCHEMA_VERSION:
            if _to_item_names(db):
                log.info("database %s: backfill metadata renamed to item names", db.name)
            _record(db, SCHEMA_VERSION)
            if record:
                log.info(
                    "database %s: backfill metadata brought forward to schema %d",
                    db.name,
                    SCHEMA_VERSION,
                )
        else:
            create_indexes(db[QUARANTINE], ITEM_INDEXES)
        _ensured.add(_key(db))


def _create_layout(db: Database) -> None:
    """Everything every version has: collections, the validator, version-free indexes."""
    metadata = ensure_collection(
        db, METADATA, {"validator": metadata_validator(), "validationLevel": "strict"}
    )
    create_indexes(metadata, METADATA_INDEXES)
    create_indexes(ensure_collection(db, QUARANTINE), QUARANTINE_INDEXES)
    ensure_collection(db, BATCH_IDS)
    create_indexes(ensure_collection(db, NOTIFICATIONS), NOTICE_INDEXES)
    ensure_journal(db, None)  # its retention is each process's setting (BACKFILL_JOURNAL_DAYS)


def _record(db: Database, version: int, *, down_by: str | None = None) -> None:
    """Set the recorded version (an upsert two processes may race on: the loser retries)."""
    now = dt.datetime.now(dt.UTC)
    update: dict[str, Any] = (
        {"$set": {"version": version, "down_by": down_by, "updated_at": now}}
        if down_by
        else {"$set": {"version": version, "updated_at": now}, "$unset": {"down_by": ""}}
    )
    for attempt in range(2):
        try:
            db[SCHEMA].update_one({"_id": SCHEMA_ID}, update, upsert=True)
            return
        except DuplicateKeyError:
            if attempt:
                raise


def _to_item_names(db: Database) -> bool:
    """Step 1 -> 2: rename what the first release wrote; True if anything had to change.

    Other processes may run it at the same time: every step is idempotent, and an old index
    another one dropped meanwhile is no error.
    """
    quarantine = db[QUARANTINE]
    names = set(quarantine.index_information())
    changed = OLD_INDEX in names
    # The old unique index first: renamed entries would collide on its missing key.
    drop_indexes(quarantine, [OLD_INDEX])
    renamed = quarantine.update_many(
        {OLD_FIELD: {"$exists": True}}, {"$rename": {OLD_FIELD: ITEM_FIELD}}
    )
    planned = db[METADATA].update_many(
        {"kind": "job", OLD_PLANNED: {"$exists": True}}, {"$rename": {OLD_PLANNED: PLANNED}}
    )
    create_indexes(quarantine, ITEM_INDEXES)
    return changed or bool(renamed.modified_count or planned.modified_count)


def downgrade_to_first_release(db: Database) -> None:
    """Back to version 1 (migration 20240409 down), for a rollback to a first-release build.

    Recorded first, so a process of this release starting meanwhile refuses instead of
    writing `item_id` entries the old index would collide on.
    """
    with _lock:
        _create_layout(db)
        _record(db, FIRST_RELEASE, down_by=DOWN_MIGRATION)
        quarantine = db[QUARANTINE]
        drop_indexes(quarantine, [ITEM_INDEX])
        quarantine.update_many(
            {ITEM_FIELD: {"$exists": True}}, {"$rename": {ITEM_FIELD: OLD_FIELD}}
        )
        db[METADATA].update_many(
            {"kind": "job", PLANNED: {"$exists": True}}, {"$rename": {PLANNED: OLD_PLANNED}}
        )
        create_indexes(quarantine, FIRST_RELEASE_INDEXES)
        _ensured.discard(_key(db))


def write_quarantine(db: Database, job_id: str, ids: list[Any], ops: list[UpdateOne]) -> None:
    """Upsert quarantine entries for `ids`; SchemaMismatchError if another layout is there.

    A process that set up the database before 20240409 took it back down would write
    `item_id` entries that collide on the first release's unique index. Asked again, the
    database says why, in one line, instead of a duplicate-key error retried as if it were
    transient; the entries this call wrote in the wrong names are taken out again (the
    caller hands its batch back, so they are written anew once the layouts agree).
    """
    try:
        db[QUARANTINE].bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") == 11000 for e in exc.details.get("writeErrors", [])):
            try:
                require_current(db)
            except SchemaMismatchError:
                db[QUARANTINE].delete_many(
                    {"job_id": job_id, ITEM_FIELD: {"$in": ids}, OLD_FIELD: {"$exists": False}}
                )
                raise
        raise


def _read_record(db: Database) -> tuple[dict[str, Any], int]:
    """The version record ({} if none) and the version it says (none: the first release)."""
    record: dict[str, Any] = db[SCHEMA].find_one({"_id": SCHEMA_ID}) or {}
    return record, int(record.get("version", FIRST_RELEASE))


def require_current(db: Database) -> None:
    """SchemaMismatchError unless the database records this release's version."""
    record, found = _read_record(db)
    if found != SCHEMA_VERSION:
        how = (
            f"migration {DOWN_MIGRATION} took it back for the earlier release"
            if record.get("down_by")
            else "another release set it up"
        )
        raise SchemaMismatchError(db.name, found, f"{how}; quarantine entries not written")


def taken_down(db: Database) -> bool:
    """True when migration 20240409 took the metadata back for the earlier release."""
    record, found = _read_record(db)
    return bool(record.get("down_by")) and found < SCHEMA_VERSION


def is_retired(collection: str, index_name: str) -> bool:
    """True for an index this layout dropped from one of its collections."""
    return index_name in RETIRED_INDEXES.get(collection, frozenset())
