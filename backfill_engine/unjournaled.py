"""Undo of a job that ran without a journal, where what it wrote can still be known for sure.

Without before-images nothing tells which fields a job wrote, so in general nothing is
undone. One case is safe: a backfill whose source is a pure function (FunctionSource) and
that writes a single field. Its synced stamp then proves that field was written, the
function recomputes the value from the document's current inputs and the job's params, and
where the field still holds exactly that value (and the stamp falls in the job's run) it is
what the job wrote: field and stamp are unset, with an update guarded on both. The value
the field held before is unknown, so it cannot come back; anything else is left.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from backfill_engine import paths
from backfill_engine.definition import Backfill
from backfill_engine.journal import RevertCounts, bson_type, same
from backfill_engine.payload import InvalidPayloadError
from backfill_engine.sources import FunctionSource
from backfill_engine.validate import validate_payload

UNSET_CHUNK = 1000  # documents per guarded bulk write


def recomputable(backfill: Backfill) -> bool:
    """Whether a job of `backfill` without a journal can be undone by recomputing its values."""
    return isinstance(backfill.source, FunctionSource) and len(backfill.writes) == 1


def undo_recomputed(db: Database, backfill: Backfill, job: Mapping[str, Any]) -> RevertCounts:
    """Unset the single field of `backfill` where it still equals what `job` computed."""
    assert isinstance(backfill.source, FunctionSource) and len(backfill.writes) == 1
    (name,) = backfill.writes
    stamp = backfill.synced_field
    window: dict[str, Any] = {"$gte": job["created_at"]}
    if job.get("finished_at") is not None:
        window["$lte"] = job["finished_at"]
    # What the batch run read, so the function sees the document as it did then.
    projection = paths.projection((*backfill.projection, stamp))
    params = job.get("params") or {}
    coll = db[backfill.collection]
    counts = RevertCounts()
    ops: list[UpdateOne] = []
    for doc in coll.find({stamp: window}, projection).batch_size(UNSET_CHUNK):
        value = _recompute(backfill, doc, params, name)
        found, held = paths.lookup(doc, name)
        if not found or value is _NONE or not same(held, value):
            counts.conflicts += 1  # changed since, or its inputs did: not surely the job's
            continue
        guard = {
            "_id": doc["_id"],
            name: {"$eq": value, "$type": bson_type(value)},
            stamp: doc[stamp],
        }
        # A dotted field: only the leaf goes, its parent document stays (journal.py says why).
        ops.append(UpdateOne(guard, {"$unset": {name: "", stamp: ""}}))
        if len(ops) == UNSET_CHUNK:
            counts.add(_apply(coll, ops))
            ops = []
    if ops:
        counts.add(_apply(coll, ops))
    return counts


_NONE = object()  # the function gives no (valid) value for this document now


def _recompute(
    backfill: Backfill, doc: Mapping[str, Any], params: Mapping[str, Any], name: str
) -> Any:
    assert isinstance(backfill.source, FunctionSource)
    try:
        payload = backfill.source.fn(doc, params)
        if payload is None:
            return _NONE
        return validate_payload(payload, backfill.writes, backfill.check)[name]
    except InvalidPayloadError:
        return _NONE
    except Exception:  # the team's code failing on one document must not stop the undo
        return _NONE


def _apply(coll: Any, ops: list[UpdateOne]) -> RevertCounts:
    res = coll.bulk_write(ops, ordered=False)
    # A guarded update that matched nothing met an application write in between: kept.
    return RevertCounts(restored=res.modified_count, conflicts=len(ops) - res.modified_count)
