"""A job's explicit id list (`--ids-file`, a replay), kept in chunk documents of its own.

A job document may not exceed 16 MiB, about 800 000 ObjectIds, and workers read their
job around every batch; so the list lives in JOB_IDS, CHUNK_IDS ids per document keyed
by job id + chunk number, and the job holds only `id_list: {count, chunks}`. Jobs of
earlier releases held the list in the job (`ids` or `params.ids`); they still plan.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database

from backfill_engine.errors import BackfillError

JOB_IDS = "backfill_job_ids"
CHUNK_IDS = 10_000  # ids per chunk document: well under 1 MiB even for long string ids
ID_LIST_FIELD = "id_list"


def chunk_id(job_id: str, chunk_no: int) -> str:
    return f"{job_id}:{chunk_no:06d}"


def store_ids(db: Database, job_id: str, ids: Sequence[Any]) -> dict[str, int]:
    """Write `ids` (in order) as chunk documents of `job_id`; what the job records of them.

    Idempotent: each chunk is written by its deterministic `_id`.
    """
    ops = [
        ReplaceOne(
            {"_id": chunk_id(job_id, n)},
            {"job_id": job_id, "chunk": n, "ids": list(ids[start : start + CHUNK_IDS])},
            upsert=True,
        )
        for n, start in enumerate(range(0, len(ids), CHUNK_IDS))
    ]
    if ops:
        db[JOB_IDS].bulk_write(ops, ordered=False)
    return {"count": len(ids), "chunks": len(ops)}


def drop_ids(db: Database, job_id: str) -> None:
    """Remove the chunks of a job that was never created (it joined another)."""
    db[JOB_IDS].delete_many({"job_id": job_id})


def has_id_list(job: dict[str, Any]) -> bool:
    """Whether the job walks an explicit id list rather than its collection."""
    return bool(job.get(ID_LIST_FIELD) or job.get("ids") or (job.get("params") or {}).get("ids"))


def stream_ids(db: Database, job: dict[str, Any]) -> Iterator[Any] | None:
    """The job's explicit ids in list order, one chunk in memory at a time; None if it has none."""
    listed = job.get(ID_LIST_FIELD)
    if listed:
        return _chunks(db, str(job["_id"]), int(listed["chunks"]))
    legacy = job.get("ids") or (job.get("params") or {}).get("ids")
    return iter(legacy) if legacy else None


def _chunks(db: Database, job_id: str, chunks: int) -> Iterator[Any]:
    coll = db[JOB_IDS]
    for n in range(chunks):
        doc = coll.find_one({"_id": chunk_id(job_id, n)})
        if doc is None:
            raise BackfillError(f"job {job_id}: chunk {n} of its id list is missing from {JOB_IDS}")
        yield from doc["ids"]
