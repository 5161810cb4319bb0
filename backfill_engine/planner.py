"""Job creation and planning: stream `_id`s ascending, cut batches, checkpoint the cursor.

Planning is resumable: batch documents have deterministic ids (job id + batch number), so
a restarted planner picks up after the highest planned batch and never creates one twice.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pymongo.errors
from bson import Code, Decimal128, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database

from backfill_engine import store
from backfill_engine.dispatch import TaskSender, fill_in_flight
from backfill_engine.errors import BackfillError
from backfill_engine.id_lists import ID_LIST_FIELD, drop_ids, store_ids, stream_ids
from backfill_engine.ids import string_twins
from backfill_engine.scope import ScopeError, check_filter, combine
from backfill_engine.states import BATCH_IDS, METADATA, TERMINAL_JOB_STATES, JobStatus
from backfill_engine.store import batch_id, batch_ids_doc, new_batch, new_job, now_utc

log = logging.getLogger(__name__)

PLANNER_LEASE_SECONDS = 30.0
PLANNER_FILL_SECONDS = 0.25  # once the cap is reached, top up slots at most this often
# Batches cut before their id lists, documents and the cursor are written (one command each
# per group): groups of 1, 2, 4, ... up to this, so the first batch starts at once.
PLAN_GROUP_MAX = 16
DUPLICATE_KEY = 11000
# Where planning starts when no batch is cut yet: not None, which is an `_id` like any other.
FROM_THE_START: Any = object()
SCOPE_CHECK_IDS = 1000  # listed ids asked about per `$in` query when a scope filters them


@dataclass(frozen=True)
class _BsonGroup:
    """Types that sort together: their `$type` names and what pymongo decodes them to."""

    aliases: tuple[str, ...]
    python: tuple[type, ...]
    name: str = ""  # how an error names a refused `_id` of this group ("" = its Python type)
    carried: bool = True
    single: bool = False  # one value only (so one such `_id` at most): no `$gt` within it


# MongoDB's BSON comparison order, lowest first, and whether a batch can carry such an
# `_id` (a worker keys documents and answers by `_id`; see `check_ids`). A `$gt` on `_id`
# only matches values of the cursor's own group, so resuming must also ask for every
# group that sorts after it, carried or not: a later id nobody asks for would be skipped
# without a word, while one that is asked for and cannot be carried is refused.
_BSON_ORDER: tuple[_BsonGroup, ...] = (
    _BsonGroup(("minKey",), (MinKey,), single=True),
    _BsonGroup(("null",), (type(None),), single=True),
    # Decimal128 sorts among the numbers, but it is no Python dict key: refused by check_ids.
    _BsonGroup(("int", "long", "double", "decimal"), (int, float, Decimal128)),
    _BsonGroup(("string", "symbol"), (str,)),
    _BsonGroup(("object",), (Mapping, DBRef), "embedded document", carried=False),
    _BsonGroup(("array",), (list, tuple), "array", carried=False),
    _BsonGroup(("binData",), (bytes,)),
    _BsonGroup(("objectId",), (ObjectId,)),
    _BsonGroup(("bool",), (bool,)),
    _BsonGroup(("date",), (dt.datetime, DatetimeMS)),
    _BsonGroup(("timestamp",), (Timestamp,)),
    # In a `$in` or an equality a regex matches by pattern: a write could reach other documents.
    _BsonGroup(("regex",), (Regex, re.Pattern), "regex", carried=False),
    _BsonGroup(
        ("dbPointer", "javascript", "javascriptWithScope"), (Code,), "javascript", carried=False
    ),
    _BsonGroup(("maxKey",), (MaxKey,), single=True),
)
_ALIAS_RANK = {alias: rank for rank, g in enumerate(_BSON_ORDER) for alias in g.aliases}
# Tried first: each subclasses a type of an earlier group (a bool is an int, Code a str).
_SUBCLASS_RANKS = ((bool, _ALIAS_RANK["bool"]), (Code, _ALIAS_RANK["javascript"]))
CARRIED_ID_TYPES = (
    "ObjectId, string, int, long, double, date, timestamp, binData, bool, null, MinKey, MaxKey"
)


def _type_rank(value: Any) -> int | None:
    """The place of `value`'s type in MongoDB's BSON comparison order; None if not a BSON type."""
    for kind, rank in _SUBCLASS_RANKS:
        if isinstance(value, kind):
            return rank
    for rank, group in enumerate(_BSON_ORDER):
        if isinstance(value, group.python):
            return rank
    return None


def after_cursor(cursor: Any) -> dict[str, Any]:
    """Filter for every `_id` that sorts after `cursor`, whatever its BSON type."""
    rank = _type_rank(cursor)
    if rank is None:
        raise ValueError(f"no BSON type sorts {type(cursor).__name__!r}")
    group = _BSON_ORDER[rank]
    later = [alias for g in _BSON_ORDER[rank + 1 :] for alias in g.aliases]
    clauses: list[dict[str, Any]] = []
    if isinstance(cursor, float) and math.isnan(cursor):
        # NaN sorts below every number but no `$gt` matches after it.
        clauses.append({"_id": {"$gte": -math.inf}})
    elif isinstance(cursor, Regex | re.Pattern):
        # A server refuses a regex as a `$gt` bound; the expression compares in BSON order.
        clauses.append({"$expr": {"$gt": ["$_id", {"$literal": cursor}]}})
    elif not group.single:
        clauses.append({"_id": {"$gt": cursor}})
    if later:
        clauses.append({"_id": {"$type": later}})
    if not clauses:
        return {"_id": {"$in": []}}  # nothing sorts after MaxKey
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}


class UnsupportedIdError(BackfillError):
    """An `_id` the engine cannot carry through a batch (it keys maps by `_id`)."""

    def __init__(self, job_id: str, value: Any) -> None:
        self.job_id, self.id_type = job_id, _id_type_name(value)
        super().__init__(
            f"job {job_id}: the collection holds an _id of type {self.id_type}; only _ids of "
            f"type {CARRIED_ID_TYPES} can be backfilled; fix or exclude it, then run again"
        )


def _id_type_name(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    rank = _type_rank(value)
    return (_BSON_ORDER[rank].name if rank is not None else "") or type(value).__name__


def carried(value: Any) -> bool:
    """Whether a batch can carry `value` as an `_id`: a known BSON type, a usable dict key."""
    rank = _type_rank(value)
    if rank is None or not _BSON_ORDER[rank].carried:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False  # NaN equals nothing, not even itself: no answer could be matched to it
    try:
        hash(value)
    except TypeError:
        return False  # Decimal128
    return True


def check_ids(job_id: str, ids: Iterable[Any]) -> None:
    """Raise UnsupportedIdError for an `_id` a batch could not round-trip: the worker keys
    documents and answers by `_id`, so an embedded document (unhashable) crashes it."""
    for value in ids:
        if not carried(value):
            raise UnsupportedIdError(job_id, value)


# The `$type` names of the `_id`s check_ids refuses, and where each sorts.
_REFUSED_ALIASES = [("decimal", _ALIAS_RANK["decimal"])] + [
    (alias, rank) for rank, g in enumerate(_BSON_ORDER) if not g.carried for alias in g.aliases
]


def refuse_uncarried_ids(coll: Collection, job_id: str, scope: dict[str, Any]) -> None:
    """Raise UnsupportedIdError if the scope holds an `_id` no batch can carry.

    Asked before the first batch is cut, so such a job fails before any of it runs. `_id`s
    sort by type first, so the two ends of the `_id` index bound which types can occur:
    a collection of one carried type (the usual ObjectIds) costs two index reads.
    """
    ends = [
        d["_id"]
        for direction in (1, -1)
        for d in coll.find({}, {"_id": 1}).sort("_id", direction).hint([("_id", 1)]).limit(1)
    ]
    # The ends are the collection's; only what the scope holds is refused (asked below).
    ranks = [r for r in map(_type_rank, ends) if r is not None]
    if not ranks:
        return
    low, high = min(ranks), max(ranks)
    asks: list[dict[str, Any]] = []
    between = [alias for alias, rank in _REFUSED_ALIASES if low <= rank <= high]
    if between:
        asks.append({"_id": {"$type": between}})
    if low <= _ALIAS_RANK["double"] <= high:
        asks.append({"_id": {"$in": [math.nan]}})
    if not asks:
        return
    found = coll.find_one(combine(scope, asks[0] if len(asks) == 1 else {"$or": asks}), {"_id": 1})
    if found is not None:
        raise UnsupportedIdError(job_id, found["_id"])


class PlanningConflictError(BackfillError):
    def __init__(self, job_id: str, holder: str) -> None:
        super().__init__(f"job {job_id} is being planned by {holder}; watching it instead")


def new_job_id(backfill: str) -> str:
    return f"{backfill}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def start_or_join(
    db: Database,
    *,
    backfill: str,
    batch_size: int,
    max_in_flight: int,
    rate_per_second: float,
    params: dict[str, Any] | None = None,
    exclusive_key: str | None = None,
    collection: str,
    scope: dict[str, Any] | None = None,
    limit: int | None = None,
    string_keyed: bool = True,
    rate_auto: dict[str, Any] | None = None,
    ids: Sequence[Any] | None = None,
    journal: bool = True,
) -> tuple[dict[str, Any], bool]:
    """Create a job, or return the active one holding the same key; (job, created).

    `journal=False` (`backfill run --no-journal`): its workers record no before-images, so
    the job cannot be reverted exactly.

    The key is `exclusive_key` (a slice, an ids file, a replay) or the backfill's name;
    the job keeps it as `exclusive_key` after it ends, so a retry takes back its own key.
    `ids`, an explicit id list, is stored beside the job (backfill_engine.id_lists).
    """
    meta = db[METADATA]
    key = exclusive_key or backfill
    job_id = new_job_id(backfill)
    doc = new_job(
        job_id,
        backfill=backfill,
        key=key,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        rate_per_second=rate_per_second,
        rate_auto=rate_auto,
        params=params,
        collection=collection,
        scope=scope,
        limit=limit,
        string_keyed=string_keyed,
    )
    if not journal:
        doc["journal"] = False
    if ids is not None:
        # The list before the job: a planner never sees the job without its whole list.
        doc[ID_LIST_FIELD] = store_ids(db, job_id, ids)
    try:
        meta.insert_one(doc)
        return doc, True
    except pymongo.errors.DuplicateKeyError:
        if ids is not None:
            drop_ids(db, job_id)
        # The unique index on active_key admits one active job per backfill.
        existing = meta.find_one({"kind": "job", "active_key": key})
        if existing is None:  # it finished between our insert and this read: try once more
            return start_or_join(
                db,
                backfill=backfill,
                batch_size=batch_size,
                max_in_flight=max_in_flight,
                rate_per_second=rate_per_second,
                params=params,
                exclusive_key=exclusive_key,
                collection=collection,
                scope=scope,
                limit=limit,
                string_keyed=string_keyed,
                rate_auto=rate_auto,
                ids=ids,
                journal=journal,
            )
        return existing, False


def _take_planner_lease(meta: Collection, job_id: str, owner: str) -> bool:
    now = now_utc()
    res = meta.update_one(
        {
            "_id": job_id,
            "kind": "job",
            "planning.done": False,
            "$or": [{"planner": None}, {"planner": owner}, {"planner_until": {"$lt": now}}],
        },
        {
            "$set": {
                "planner": owner,
                "planner_until": now + dt.timedelta(seconds=PLANNER_LEASE_SECONDS),
            }
        },
    )
    return res.modified_count == 1 or res.matched_count == 1


def _id_stream(
    coll: Collection, cursor: Any, explicit: Iterable[Any] | None, scope: dict[str, Any]
) -> Iterator[Any]:
    if explicit is not None:
        ids = iter(explicit)
        if cursor is not FROM_THE_START:
            _skip_through(ids, cursor)
        yield from _in_scope(coll, ids, scope) if scope else ids
        return
    query = combine(scope, None if cursor is FROM_THE_START else after_cursor(cursor))
    # The hint keeps the walk on the `_id` index even when a scope filter would tempt the
    # planner towards another index and an in-memory sort.
    scan = coll.find(query, {"_id": 1}).sort("_id", 1).hint([("_id", 1)])
    for doc in scan.batch_size(5000):
        yield doc["_id"]


def _same_id(a: Any, b: Any) -> bool:
    # `True == 1` in Python, never in BSON.
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _skip_through(ids: Iterator[Any], cursor: Any) -> None:
    """Advance `ids` past `cursor`, the last id planned (it came from this list)."""
    for i in ids:
        if _same_id(i, cursor):
            return
    log.warning("planning cursor %r is not in the job's id list; nothing left to plan", cursor)


def _in_scope(coll: Collection, ids: Iterator[Any], scope: dict[str, Any]) -> Iterator[Any]:
    """The listed ids whose documents match `scope` (the definition's query and --filter),
    in list order: one `$in` query per SCOPE_CHECK_IDS ids, so the server does the matching.
    """
    while chunk := list(itertools.islice(ids, SCOPE_CHECK_IDS)):
        query = combine(scope, {"_id": {"$in": chunk}})
        found = [d["_id"] for d in coll.find(query, {"_id": 1})]
        try:
            inside = set(found)
            kept = [i for i in chunk if i in inside]
        except TypeError:  # an unhashable id (check_ids refuses it): compare one by one
            kept = [i for i in chunk if i in found]
        yield from kept


def _chunks(ids: Iterable[Any], size: Callable[[], int]) -> Iterator[list[Any]]:
    """Cut `ids` into batches of `size()` ids, asked anew for every batch (`backfill set`)."""
    chunk: list[Any] = []
    for i in ids:
        chunk.append(i)
        if len(chunk) >= size():
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def mixes_id_types(coll: Collection) -> bool:
    """Whether `coll` holds `_id`s of more than one sort class (numbers, strings, ObjectIds...).

    `_id`s sort by BSON type first, so the two ends of the `_id` index tell: two reads.
    """
    ends = [
        d["_id"]
        for direction in (1, -1)
        for d in coll.find({}, {"_id": 1}).sort("_id", direction).hint([("_id", 1)]).limit(1)
    ]
    return len(ends) == 2 and _type_rank(ends[0]) != _type_rank(ends[1])


def find_ambiguous(coll: Collection, ids: list[Any]) -> list[Any]:
    """The ids among `ids` whose string form another document's `_id` in `coll` shares.

    One `$in` on `_id` per batch: only ids that have a twin form at all are asked about.
    The check is symmetric, so the twin is flagged when its own batch is cut.
    """
    twins: dict[Any, list[Any]] = {}
    for i in ids:
        for twin in string_twins(i):
            twins.setdefault(twin, []).append(i)
    if not twins:
        return []
    found = {d["_id"] for d in coll.find({"_id": {"$in": list(twins)}}, {"_id": 1})}
    flagged: list[Any] = []
    for twin, owners in twins.items():
        if twin in found:
            flagged.extend(o for o in owners if o not in flagged)
    return flagged


def _insert_batches(meta: Collection, job_id: str, cuts: Sequence[tuple[int, list[Any]]]) -> None:
    """The batch documents of `cuts` (batch number, ids), in one insert.

    A duplicate key means that batch document was written before a crash: it is kept, and
    the others are still inserted (unordered).
    """
    docs = [new_batch(job_id, batch_no, ids) for batch_no, ids in cuts]
    try:
        meta.insert_many(docs, ordered=False)
    except pymongo.errors.BulkWriteError as exc:
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise


def _write_cuts(
    meta: Collection,
    id_lists: Collection,
    job_id: str,
    owner: str,
    cuts: Sequence[tuple[int, list[Any], list[Any]]],
    planned_before: int,
) -> bool:
    """Write a group of cut batches: their id lists, then their batch documents, then the
    job's cursor, one command each; False if another planner cut them or holds the job.

    In that order, so a crash leaves at worst id lists without batch documents, which the
    next planner finishes as cut (`_cut_batches`), never a batch without its ids.
    """
    lists = [batch_ids_doc(job_id, no, ids, ambiguous) for no, ids, ambiguous in cuts]
    try:
        id_lists.insert_many(lists, ordered=True)
    except pymongo.errors.BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if not errors or errors[0].get("code") != DUPLICATE_KEY:
            raise
        first = cuts[int(errors[0].get("index", 0))][0]
        log.warning("batch %d of %s was cut by another planner; stopping", first, job_id)
        return False
    _insert_batches(meta, job_id, [(no, ids) for no, ids, _ in cuts])
    now = now_utc()
    res = meta.update_one(
        {"_id": job_id, "planner": owner},
        {
            "$set": {
                "planning.cursor": cuts[-1][1][-1],
                "planning.batches": cuts[-1][0] + 1,
                "planning.items": planned_before + sum(len(ids) for _, ids, _ in cuts),
                "planner_until": now + dt.timedelta(seconds=PLANNER_LEASE_SECONDS),
                "updated_at": now,
            }
        },
    )
    if res.matched_count == 0:
        log.warning("planner lease for %s lost; another planner continues", job_id)
        return False
    return True


def _write_group(
    meta: Collection,
    id_lists: Collection,
    job_id: str,
    owner: str,
    cuts: Sequence[tuple[int, list[Any], list[Any]]],
    planned_before: int,
    on_batch: Callable[[int, int], None] | None,
) -> int | None:
    """`_write_cuts`, then `on_batch` for each cut; the documents planned after them, or
    None if another planner cut them or holds the job."""
    if not _write_cuts(meta, id_lists, job_id, owner, cuts, planned_before):
        return None
    planned = planned_before
    for cut_no, cut_ids, _ in cuts:
        planned += len(cut_ids)
        if on_batch:
            on_batch(cut_no + 1, planned)
    return planned


def plan_job(
    db: Database,
    sender: TaskSender,
    queue: str,
    job_id: str,
    *,
    on_batch: Callable[[int, int], None] | None = None,
    stop_after: int | None = None,
) -> bool:
    """Cut and dispatch the job's remaining batches; False if another planner holds it.

    A job that can never be planned (an `_id` no batch can carry, a scope the server
    rejects) ends `failed` with the reason, which is raised; any other error is raised and
    leaves the job to the next planner (a server that does not answer may answer later).
    `stop_after` plans at most that many batches in this call (tests use it to
    simulate a planner killed halfway).
    """
    meta = db[METADATA]
    job = meta.find_one({"_id": job_id, "kind": "job"})
    if job is None or job["status"] in [s.value for s in TERMINAL_JOB_STATES]:
        return True  # failed or cancelled: nothing is cut for it any more
    if job.get("reverts"):
        from backfill_engine.revert_plan import plan_revert  # cut from a journal, not a scan

        return plan_revert(db, sender, queue, job_id)
    try:
        if _scans_from_the_start(job):
            refuse_uncarried_ids(db[job["collection"]], job_id, job.get("scope") or {})
        return _cut_batches(db, sender, queue, job_id, on_batch=on_batch, stop_after=stop_after)
    except UnsupportedIdError as exc:
        store.fail_job(meta, job_id, str(exc))
        raise
    except pymongo.errors.OperationFailure:
        try:
            # Asked again on its own: the error was the scope's only if the scope alone fails.
            check_filter(
                db[job["collection"]], job.get("scope") or {}, what=f"job {job_id}: its filter"
            )
        except ScopeError as rejected:
            store.fail_job(meta, job_id, str(rejected))
            raise rejected from None
        raise


def _scans_from_the_start(job: dict[str, Any]) -> bool:
    """Whether no batch is cut yet and the job walks its whole scope (no id list, no limit)."""
    planning = job["planning"]
    explicit = job.get(ID_LIST_FIELD) or job.get("ids") or job["params"].get("ids")
    fresh = not planning.get("done") and not planning.get("batches")
    return fresh and not explicit and job.get("limit") is None


def _cut_batches(
    db: Database,
    sender: TaskSender,
    queue: str,
    job_id: str,
    *,
    on_batch: Callable[[int, int], None] | None,
    stop_after: int | None,
) -> bool:
    meta, id_lists = db[METADATA], db[BATCH_IDS]
    owner = f"{socket.gethostname()}:{secrets.token_hex(4)}"
    job = meta.find_one({"_id": job_id, "kind": "job"})
    if job is None or job["planning"].get("done"):
        return True
    coll = db[job["collection"]]
    if not _take_planner_lease(meta, job_id, owner):
        return False
    # Resume from the highest batch actually written, not the job's cursor: the id list and
    # then the batch document are written first, so after a crash they are the truth.
    last = meta.find_one({"job_id": job_id}, {"last_id": 1, "batch_no": 1}, sort=[("batch_no", -1)])
    next_no = int(last["batch_no"]) + 1 if last else 0
    cursor = last["last_id"] if last else FROM_THE_START
    planned_docs = sum(d["size"] for d in meta.find({"job_id": job_id}, {"size": 1}))
    # Killed between writing batches' ids and their documents: finish those batches as cut.
    while (orphan := id_lists.find_one({"_id": batch_id(job_id, next_no)})) is not None:
        _insert_batches(meta, job_id, [(next_no, orphan["ids"])])
        cursor, next_no = orphan["ids"][-1], next_no + 1
        planned_docs += len(orphan["ids"])
    explicit = stream_ids(db, job)
    limit = job.get("limit")
    # Fill free slots after every group of cuts until the cap is reached; from then on
    # finishing workers hand out the next batches, and the planner only tops up now and then.
    filling, last_fill = True, time.monotonic()
    # Ids can share a string form only if the collection mixes `_id` types; most hold one
    # type, and then no batch needs the per-batch twin query.
    twins_possible = job.get("string_keyed", True) and mixes_id_types(coll)
    stream = _id_stream(coll, cursor, explicit, job.get("scope") or {})
    if limit is not None:
        # `--limit N`: the first N ids of the scope in `_id` order, whatever was planned before.
        stream = itertools.islice(stream, max(0, int(limit) - planned_docs))
    # `backfill set --batch-size` applies from the next group of cuts: re-read with the status.
    batch_size = [int(job["batch_size"])]
    group: list[tuple[int, list[Any], list[Any]]] = []  # cut, not yet written
    group_size = 1  # the first batch goes out at once; groups then grow to PLAN_GROUP_MAX
    for done_now, ids in enumerate(_chunks(stream, lambda: batch_size[0]), start=1):
        try:
            check_ids(job_id, ids)
        except UnsupportedIdError:
            # Nothing of this batch is written: after the data is fixed, planning resumes here.
            if group:
                _write_group(meta, id_lists, job_id, owner, group, planned_docs, None)
            meta.update_one({"_id": job_id, "planner": owner}, {"$set": {"planner": None}})
            raise
        ambiguous = find_ambiguous(coll, ids) if twins_possible else []
        group.append((next_no, ids, ambiguous))
        next_no += 1
        stopping = stop_after is not None and done_now >= stop_after
        if len(group) < group_size and not stopping:
            continue
        written = _write_group(meta, id_lists, job_id, owner, group, planned_docs, on_batch)
        if written is None:
            return False
        planned_docs = written
        group, group_size = [], min(2 * group_size, PLAN_GROUP_MAX)
        if filling or time.monotonic() - last_fill >= PLANNER_FILL_SECONDS:
            filling = fill_in_flight(meta, sender, queue, job_id) > 0
            last_fill = time.monotonic()
        if stopping:
            return True
        status = meta.find_one({"_id": job_id}, {"status": 1, "batch_size": 1})
        if status and status["status"] == JobStatus.CANCELLED.value:
            return True
        if status and status.get("batch_size"):
            batch_size[0] = int(status["batch_size"])
    if group:
        written = _write_group(meta, id_lists, job_id, owner, group, planned_docs, on_batch)
        if written is None:
            return False
        planned_docs = written
    now = now_utc()
    meta.find_one_and_update(
        {"_id": job_id, "planner": owner},
        {
            "$set": {
                "planning.done": True,
                "planning.batches": next_no,
                "planning.items": planned_docs,
                "planner": None,
                "updated_at": now,
            }
        },
        return_document=ReturnDocument.AFTER,
    )
    store.finish_planning(meta, job_id)
    fill_in_flight(meta, sender, queue, job_id)
    return True
