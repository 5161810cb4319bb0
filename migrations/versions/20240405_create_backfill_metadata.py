"""Create backfill_metadata (jobs and batches) and backfill_quarantine, with their indexes."""

from __future__ import annotations

from pymongo.database import Database

from migrations import (
    Migration,
    SchemaBuilder,
    asc,
    create_indexes,
    ensure_collection,
    index,
    schema,
    with_validation_level,
    with_validator,
)

METADATA = "backfill_metadata"
QUARANTINE = "backfill_quarantine"
BATCH_IDS = "backfill_batch_ids"  # each batch's product ids, keyed by the batch's _id

JOB_STATUSES = [
    "planning",
    "running",
    "paused",
    "cancelled",
    "completed",
    "completed_with_errors",
    "failed",
]
BATCH_STATUSES = ["pending", "queued", "running", "done", "failed", "cancelled"]

S = SchemaBuilder


def _whole(minimum: int | None = None) -> SchemaBuilder:
    # Python ints arrive as int32 or int64 depending on size: accept both.
    b = S().bson_type("int", "long")
    return b.minimum(minimum) if minimum is not None else b


def metadata_validator() -> SchemaBuilder:
    """One schema for both kinds (no oneOf): `kind` is required, other fields typed when present.

    Statuses are the union of job and batch statuses; the code paths that write each kind
    keep to their own subset.
    """
    counters = S.object(
        {n: _whole(0) for n in ("written", "unchanged", "missing", "invalid", "deleted")}
    )
    return (
        schema()
        .bson_type("object")
        .field("_id", S.string(), required=True)
        .field("kind", S().enum(["job", "batch"]), required=True)
        .field("status", S().bson_type("string").enum(sorted(set(JOB_STATUSES + BATCH_STATUSES))))
        # job fields
        .field("backfill", S.string())
        .field("batch_size", _whole(1))
        .field("max_in_flight", _whole(1))
        .field("created_at", S.date())
        .field("updated_at", S.date())
        # batch fields
        .field("job_id", S.string())
        .field("batch_no", _whole(0))
        .field("size", _whole(1))
        .field("attempts", _whole(0))
        .field("fencing_token", _whole(0))
        .field("counters", counters)
        .field("active_key", S.string())
    )


METADATA_INDEXES = [
    index(asc("job_id", "batch_no"))
    .name("job_batch_no_unique")
    .unique()
    .partial({"kind": "batch"}),
    index(asc("job_id", "status")).name("job_status"),
    index(asc("kind", "status")).name("kind_status"),
    # One active job per backfill: the job holds active_key = backfill name until it ends.
    index(asc("active_key"))
    .name("active_key_unique")
    .unique()
    .partial({"active_key": {"$exists": True}}),
]

QUARANTINE_INDEXES = [
    index(asc("job_id", "product_id")).name("job_product_unique").unique(),
    index(asc("job_id", "replayed")).name("job_replayed"),
]


class CreateBackfillMetadata(Migration):
    version = "20240405_create_backfill_metadata"
    description = "backfill_metadata (jobs, batches), batch id lists and quarantine, with indexes"

    def up(self, db: Database) -> None:
        metadata = ensure_collection(
            db, METADATA, with_validator(metadata_validator()), with_validation_level("strict")
        )
        create_indexes(metadata, *METADATA_INDEXES)
        quarantine = ensure_collection(db, QUARANTINE)
        create_indexes(quarantine, *QUARANTINE_INDEXES)
        ensure_collection(db, BATCH_IDS)

    def down(self, db: Database) -> None:
        db.drop_collection(METADATA)
        db.drop_collection(QUARANTINE)
        db.drop_collection(BATCH_IDS)
