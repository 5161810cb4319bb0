"""The before-image journal: what each write of a job replaced, so the job can be undone.

Before a batch run writes a sub-chunk, it records one journal document (split only if it
would grow past JOURNAL_DOC_BYTES) holding, for every document it is about to change, the
previous value of exactly the fields its `$set` changes (or that the field was absent) and
what it writes. The order makes a crash harmless: a journal entry for a write that did not
land only names values the documents do not hold, and undo compares before it restores.

Journal documents expire after BACKFILL_JOURNAL_DAYS (a TTL index on `created_at`).

`revert_job` undoes one job from its journal: a field goes back to its before-image only
while it still holds, type-exact, what the job wrote, with an update guarded on that value;
anything changed since is left and counted as a conflict.

Nested fields (a dotted write such as `dimensions.weight_g`): the entry stores `before` and
`wrote` nested (`{"dimensions": {"weight_g": 5}}`, never a dotted key) and lists the
written paths under `paths`; `absent` names dotted paths. Undo restores or `$unset`s the
leaf only. A parent document the job's `$set` created stays behind as `{}` once its
leaf is unset: removing it could drop a sibling an application wrote meanwhile, and an
empty document holds no value anyone wrote.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import bson
import pymongo.errors
from pymongo import IndexModel, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from backfill_engine import paths
from backfill_engine.ddl import create_indexes, ensure_collection
from backfill_engine.settings import DEFAULT_JOURNAL_DAYS
from backfill_engine.store import now_utc

JOURNAL = "backfill_journal"
TTL_INDEX = "journal_ttl"  # created_at + expireAfterSeconds
JOB_INDEX = "journal_job_batch"  # a job's entries, batch by batch, in delivery order
SECONDS_PER_DAY = 86_400
# Entries per journal document are packed up to this many bytes, far under MongoDB's
# 16 MiB document limit; a sub-chunk is at most 1000 documents of capped written values,
# so only large before-images (values the application stored) ever cause a split.
JOURNAL_DOC_BYTES = 8 * 1024 * 1024
# One entry alone above this cannot be stored with its envelope: it keeps what was written
# and no before-image, and undo leaves those fields alone (counted as unrestorable).
MAX_ENTRY_BYTES = 15 * 1024 * 1024
REVERT_READ_IDS = 1000  # documents per read and per guarded bulk write while reverting

_ensured: set[tuple[int, str, int | None]] = set()  # (client, database, days) set up here
_lock = threading.Lock()


def ensure_journal(
    db: Database, days: int | None = DEFAULT_JOURNAL_DAYS, *, force: bool = False
) -> None:
    """Create the journal and its indexes (TTL of `days`, per-job order); idempotent, once
    per process, safe when processes race on a new database.

    `days=None` is the engine's setup on first use (backfill_engine.schema): a retention
    some process already set is left as it is, else the default is used.
    """
    key = (id(db.client), db.name, days)
    with _lock:
        if key in _ensured and not force:
            return
        coll = ensure_collection(db, JOURNAL)
        order = [("job_id", 1), ("batch_no", 1), ("token", 1), ("part", 1)]
        create_indexes(coll, [IndexModel(order, name=JOB_INDEX)])
        seconds = (DEFAULT_JOURNAL_DAYS if days is None else days) * SECONDS_PER_DAY
        ttl = {ix["name"]: ix for ix in coll.list_indexes()}.get(TTL_INDEX)
        if ttl is None:
            try:
                coll.create_index([("created_at", 1)], name=TTL_INDEX, expireAfterSeconds=seconds)
            except pymongo.errors.OperationFailure:
                # Another process created it meanwhile, maybe with another retention.
                if days is not None:
                    _set_retention(db, seconds)
        elif days is not None and ttl.get("expireAfterSeconds") != seconds:
            _set_retention(db, seconds)
        _ensured.add(key)


def _set_retention(db: Database, seconds: int) -> None:
    db.command("collMod", JOURNAL, index={"name": TTL_INDEX, "expireAfterSeconds": seconds})


# --- writing ---------------------------------------------------------------------------


def before_image(
    pid: Any, current: Mapping[str, Any], written: Mapping[str, Any]
) -> dict[str, Any]:
    """One journal entry: the document's previous values of exactly the fields written.

    A field that held null is in `before` as null; one that was absent is named in `absent`.
    Dotted paths are stored nested, with the paths listed in `paths`.
    """
    before: dict[str, Any] = {}
    absent: list[str] = []
    for f in written:
        found, value = paths.lookup(current, f)
        if found:
            before[f] = value
        else:
            absent.append(f)
    if not any("." in f for f in written):
        return {"_id": pid, "before": before, "absent": absent, "wrote": dict(written)}
    return {
        "_id": pid,
        "before": paths.nest(before),
        "absent": absent,
        "wrote": paths.nest(written),
        "paths": list(written),
    }


def _written_paths(entry: Mapping[str, Any]) -> list[str]:
    """The fields an entry wrote: listed under `paths` when nested, else `wrote`'s keys."""
    return list(entry.get("paths") or entry["wrote"])


def journal_docs(
    job_id: str, batch_no: int, token: int, entries: list[dict[str, Any]], now: Any
) -> list[dict[str, Any]]:
    """The journal documents for one sub-chunk's entries: one, unless they are too big for it."""
    docs: list[dict[str, Any]] = []
    piece: list[dict[str, Any]] = []
    size = 0
    for e in entries:
        n = len(bson.encode(e))
        if n > MAX_ENTRY_BYTES:
            kept = {k: e[k] for k in ("paths",) if k in e}
            e = {"_id": e["_id"], "before": {}, "absent": [], "wrote": e["wrote"], "lost": True}
            e.update(kept)
            n = len(bson.encode(e))
        if piece and size + n > JOURNAL_DOC_BYTES:
            docs.append(piece_doc(job_id, batch_no, token, len(docs), piece, now))
            piece, size = [], 0
        piece.append(e)
        size += n
    if piece:
        docs.append(piece_doc(job_id, batch_no, token, len(docs), piece, now))
    return docs


def piece_doc(
    job_id: str, batch_no: int, token: int, part: int, entries: list[dict[str, Any]], now: Any
) -> dict[str, Any]:
    """A journal document; `token` (the lease's fencing token) orders re-deliveries."""
    return {
        "job_id": job_id,
        "batch_no": batch_no,
        "token": token,
        "part": part,
        "created_at": now,
        "docs": entries,
    }


def record(
    db: Database,
    job_id: str,
    batch_no: int,
    token: int,
    entries: list[dict[str, Any]],
    *,
    days: int = DEFAULT_JOURNAL_DAYS,
) -> None:
    """Insert a sub-chunk's before-images; the caller writes the documents only after this."""
    if not entries:
        return
    ensure_journal(db, days)
    db[JOURNAL].insert_many(journal_docs(job_id, batch_no, token, entries, now_utc()))


# --- reading and reverting -------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Type-exact equality as BSON stores it: 5 is not 5.0, null is not absent, key order counts."""
    return bson.encode({"v": a}) == bson.encode({"v": b})


@dataclass
class Change:
    """What one job did to one field of one document, over all its deliveries."""

    had: bool  # the field existed before the job wrote it
    before: Any
    wrote: Any
    lost: bool = False  # the before-image was too large to journal


def merge(entries: Iterable[Mapping[str, Any]]) -> dict[Any, dict[str, Change]]:
    """Per document and field, the job's before-image and its last written value.

    `entries` come in delivery order. A later entry whose before-image is what the earlier
    one wrote continues it (keep the earliest before-image); one whose before-image is
    something else means the earlier write never landed, or the value changed between
    deliveries: that later before-image is what the job overwrote, so it wins.
    """
    out: dict[Any, dict[str, Change]] = {}
    for e in entries:
        fields = out.setdefault(e["_id"], {})
        absent = set(e.get("absent") or ())
        before = e.get("before") or {}
        for f in _written_paths(e):
            value = paths.get(e["wrote"], f)
            had, was = paths.lookup(before, f)
            prev = fields.get(f)
            lost = bool(e.get("lost"))
            if prev is not None and not lost and had and same(was, prev.wrote):
                prev.wrote = value
                continue
            if not had and f not in absent:
                lost = True  # neither a value nor "absent": nothing safe to restore
            fields[f] = Change(had, was, value, lost)
    return out


def job_batches(db: Database, job_id: str) -> Iterator[tuple[int, dict[Any, dict[str, Change]]]]:
    """The job's changes, one batch at a time (a document belongs to one batch of a job)."""
    cursor = db[JOURNAL].find({"job_id": job_id}).sort([("batch_no", 1), ("token", 1), ("part", 1)])
    batch_no: int | None = None
    entries: list[Mapping[str, Any]] = []
    for doc in cursor:
        if batch_no is not None and doc["batch_no"] != batch_no:
            yield batch_no, merge(entries)
            entries = []
        batch_no = int(doc["batch_no"])
        entries.extend(doc["docs"])
    if batch_no is not None:
        yield batch_no, merge(entries)


def batch_changes(db: Database, job_id: str, batch_no: int) -> dict[Any, dict[str, Change]]:
    """What one batch of the job changed, over all its deliveries (a revert batch's input)."""
    query = {"job_id": job_id, "batch_no": batch_no}
    cursor = db[JOURNAL].find(query).sort([("token", 1), ("part", 1)])
    return merge(e for doc in cursor for e in doc["docs"])


def has_journal(db: Database, job_id: str) -> bool:
    return db[JOURNAL].find_one({"job_id": job_id}, {"_id": 1}) is not None


@dataclass
class RevertCounts:
    """Field values: put back, found already put back, left because they changed since."""

    restored: int = 0
    already: int = 0
    conflicts: int = 0
    unrestorable: int = 0  # before-image too large to have been journaled

    def add(self, other: RevertCounts) -> None:
        self.restored += other.restored
        self.already += other.already
        self.conflicts += other.conflicts
        self.unrestorable += other.unrestorable


# Why a field is left: changed since the job wrote it, its document gone, or no before-image.
CHANGED, DELETED, UNRESTORABLE = "changed", "deleted", "unrestorable"
OnLeft = Callable[[str, Change, str, Mapping[str, Any] | None], None]


def plan_restore(
    pid: Any,
    current: Mapping[str, Any] | None,
    changes: Mapping[str, Change],
    counts: RevertCounts,
    on_left: OnLeft | None = None,
    *,
    namespace: str | None = None,
) -> UpdateOne | None:
    """The guarded update that puts back the fields still holding what the job wrote.

    The filter names each such field's written value and its BSON type, so an application
    write that lands between our read and this update makes it match nothing. A dotted
    field's guard also refuses arrays on its way, where the filter would match an element
    but the leaf could not be set. `on_left(field, change, why, current)` hears of every
    field counted as a conflict or unrestorable (a revert job lists them).
    """
    guard: dict[str, Any] = {"_id": pid}
    sets: dict[str, Any] = {}
    unsets: dict[str, Any] = {}
    doc = current or {}
    for f, c in changes.items():
        found, now = paths.lookup(doc, f)
        if c.lost:
            counts.unrestorable += 1
            if on_left is not None:
                on_left(f, c, UNRESTORABLE, current)
        elif found and same(now, c.wrote):
            guard[f] = {"$eq": c.wrote, "$type": bson_type(c.wrote)}
            parts = paths.segments(f)
            for depth in range(1, len(parts)):
                guard[".".join(parts[:depth])] = {"$not": {"$type": "array"}}
            if c.had:
                sets[f] = c.before
            else:
                unsets[f] = ""
        elif current is not None and holds_before(doc, f, c):
            counts.already += 1
        else:
            counts.conflicts += 1  # changed since, or the document is gone
            if on_left is not None:
                on_left(f, c, DELETED if current is None else CHANGED, current)
    if not (sets or unsets):
        return None
    update: dict[str, Any] = {}
    if sets:
        update["$set"] = sets
    if unsets:
        update["$unset"] = unsets
    return UpdateOne(guard, update, namespace=namespace)


def bson_type(value: Any) -> int:
    """The BSON type number `value` is stored as (for a `$type` guard)."""
    return bson.encode({"v": value})[4]


# Hears of each field a revert leaves: (batch, document id, field, change, why, current).
OnLeftField = Callable[[int, Any, str, Change, str, Mapping[str, Any] | None], None]


def revert_job(
    db: Database,
    collection: str,
    job_id: str,
    *,
    on_batch: Callable[[], None] | None = None,
    on_left: OnLeftField | None = None,
) -> RevertCounts:
    """Put back what job `job_id` changed in `collection` and nothing else; count each field.

    `on_left` hears of every field left (a conflict or unrestorable), with its batch number,
    so the caller can list them as a revert job does (backfill_engine.revert_conflicts).
    """
    coll = db[collection]
    total = RevertCounts()
    for batch_no, changes in job_batches(db, job_id):
        if on_batch is not None:
            on_batch()
        ids = list(changes)
        for start in range(0, len(ids), REVERT_READ_IDS):
            piece = {pid: changes[pid] for pid in ids[start : start + REVERT_READ_IDS]}
            total.add(_revert_piece(coll, piece, batch_no, on_left))
    return total


def _revert_piece(
    coll: Collection,
    changes: dict[Any, dict[str, Change]],
    batch_no: int,
    on_left: OnLeftField | None,
) -> RevertCounts:
    fields = {f for per_doc in changes.values() for f in per_doc}
    current = _read(coll, list(changes), fields)
    counts = RevertCounts()
    planned: dict[Any, UpdateOne] = {}
    for pid, per_doc in changes.items():
        left: OnLeft | None = None if on_left is None else partial(on_left, batch_no, pid)
        op = plan_restore(pid, current.get(pid), per_doc, counts, on_left=left)
        if op is not None:
            planned[pid] = op
    if not planned:
        return counts
    res = coll.bulk_write(list(planned.values()), ordered=False)
    if res.matched_count == len(planned):
        counts.restored += sum(restoring(changes[p], current.get(p)) for p in planned)
        return counts
    # An application write beat some guarded updates: find out, field by field, which ones
    # were put back (they hold their before-image now) and which were left.
    after = _read(coll, list(planned), fields)
    for pid in planned:
        doc = after.get(pid)
        for f, c in changes[pid].items():
            if not was_restoring(f, c, current.get(pid)):
                continue
            if doc is not None and holds_before(doc, f, c):
                counts.restored += 1
            else:
                counts.conflicts += 1
                if on_left is not None:
                    on_left(batch_no, pid, f, c, DELETED if doc is None else CHANGED, doc)
    return counts


def holds_before(doc: Mapping[str, Any], f: str, c: Change) -> bool:
    """Whether field `f` of `doc` is as it was before the job (the value, or absent)."""
    found, value = paths.lookup(doc, f)
    return same(value, c.before) if c.had and found else not c.had and not found


def was_restoring(f: str, c: Change, current: Mapping[str, Any] | None) -> bool:
    """Whether field `f` of `current` still held what the job wrote (so it was to be put back)."""
    if c.lost or current is None:
        return False
    found, value = paths.lookup(current, f)
    return found and same(value, c.wrote)


def restoring(per_doc: Mapping[str, Change], current: Mapping[str, Any] | None) -> int:
    """How many fields of one document a guarded restore puts back."""
    return sum(1 for f, c in per_doc.items() if was_restoring(f, c, current))


def _read(coll: Collection, ids: list[Any], fields: set[str]) -> dict[Any, dict[str, Any]]:
    projection = paths.projection(fields) or {"_id": 1}
    return {d["_id"]: d for d in coll.find({"_id": {"$in": ids}}, projection)}
