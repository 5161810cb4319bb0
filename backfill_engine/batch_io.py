"""The batch core's reads, source call and quarantine entries: I/O that holds no rule itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo import UpdateOne
from pymongo.collection import Collection

from backfill_engine import paths
from backfill_engine.batch_context import BatchLog
from backfill_engine.decide import Outcome
from backfill_engine.definition import Backfill
from backfill_engine.http_client import SourceProtocolError
from backfill_engine.sources import SourceContext, SourceResult
from backfill_engine.store import now_utc

# Which batch counter a quarantined outcome counts under (ambiguous ids are refused input).
COUNTER_OF = {Outcome.MISSING: "missing", Outcome.INVALID: "invalid", Outcome.AMBIGUOUS: "invalid"}


def read_current(
    coll: Collection, ids: list[Any], fields: Iterable[str], *, per_read: int = 0
) -> dict[Any, dict[str, Any]]:
    """The documents among `ids` that exist, with only `fields` (dotted paths read the
    nested value; a path under another one is covered by it), keyed by `_id`.

    One query, or one per `per_read` ids when that is set (BACKFILL_READ_IDS): some
    servers charge more than linearly for a long `$in` list.
    """
    projection = paths.projection(fields)
    step = per_read if per_read > 0 else max(len(ids), 1)
    found: dict[Any, dict[str, Any]] = {}
    for start in range(0, len(ids), step):
        piece = ids[start : start + step]
        # One more than can match: the first reply then holds every document and closes
        # the cursor; with exactly len(piece) the server cannot tell it is done, and a
        # getMore follows.
        for d in coll.find({"_id": {"$in": piece}}, projection, batch_size=len(piece) + 1):
            found[d["_id"]] = d
    return found


def ask_source(
    backfill: Backfill, ctx: SourceContext, docs: list[dict[str, Any]], blog: BatchLog
) -> SourceResult:
    """Ask the source for a sub-chunk; quarantine it whole only when no id got an answer.

    The HTTP client splits a request that fails for some ids' content and reports only
    those ids in error; SourceProtocolError means every part, each id alone too, came
    back broken or refused (or the API broke its contract: a redirect, an odd status).
    """
    if not docs:
        return SourceResult.empty()
    try:
        return backfill.source.fetch(docs, ctx)
    except SourceProtocolError as exc:
        ids = [d["_id"] for d in docs]
        blog.warning("source gave no usable answer for %d ids: %s", len(ids), exc)
        return SourceResult.all_invalid(ids, f"{type(exc).__name__}: {exc}", exc.status)


def status_of(outcome: Outcome, result: SourceResult) -> int | None:
    """The HTTP status a quarantine entry records for an id's outcome."""
    if outcome is Outcome.AMBIGUOUS:
        return None
    if outcome is Outcome.MISSING:
        return 200 if result.http_status is None else result.http_status
    return result.http_status


def quarantine_ops(job_id: str, batch_no: int, entries: list[dict[str, Any]]) -> list[UpdateOne]:
    """Upserts of the quarantine entries, one per item and job."""
    now = now_utc()
    return [
        UpdateOne(
            {"job_id": job_id, "item_id": e["item_id"]},
            {
                "$set": {**e, "job_id": job_id, "batch_no": batch_no, "updated_at": now},
                "$setOnInsert": {"created_at": now, "replayed": False},
            },
            upsert=True,
        )
        for e in entries
    ]
