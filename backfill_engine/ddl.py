"""Create collections and indexes idempotently, safe when several processes do it at once.

The engine sets up its own collections with these (`schema.py`); the migration framework's
`ensure_collection`, `create_indexes` and `drop_indexes` are these same functions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import IndexModel
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CollectionInvalid, OperationFailure

# Server error codes.
NAMESPACE_EXISTS = 48  # created by someone else between our check and create
NAMESPACE_NOT_FOUND = 26  # nothing to drop
INDEX_NOT_FOUND = 27  # nothing to drop
# The same index created by two processes at once: one of them may hear one of these.
INDEX_RACE_CODES = (
    85,  # IndexOptionsConflict
    86,  # IndexKeySpecsConflict
    68,  # IndexAlreadyExists
    276,  # IndexBuildAlreadyInProgress
)
INDEX_RACE_TRIES = 5
INDEX_RACE_PAUSE_SECONDS = 0.2  # times the try number: at most 2 s in all


def ensure_collection(
    db: Database, name: str, options: Mapping[str, Any] | None = None
) -> Collection:
    """Create `name` with `options`, or apply them to the existing collection (collMod).

    Errors are never swallowed, except the "already exists" race, which falls through to
    collMod. Options the collection already has are not applied again: every process runs
    this on first use, and a collMod locks the collection.
    """
    opts = dict(options or {})
    existing = list(db.list_collections(filter={"name": name}))
    if not existing:
        try:
            db.create_collection(name, **opts)
            return db[name]
        except CollectionInvalid:
            pass  # created by someone else between our check and create
        except OperationFailure as exc:
            if exc.code != NAMESPACE_EXISTS:
                raise
        existing = list(db.list_collections(filter={"name": name}))
    have = existing[0].get("options", {}) if existing else {}
    if any(have.get(k) != v for k, v in opts.items()):
        db.command("collMod", name, **opts)
    return db[name]


def create_indexes(coll: Collection, models: Sequence[IndexModel]) -> list[str]:
    """Create the indexes (a no-op for ones that already exist identically); their names.

    Two processes creating the same index at once may see the server refuse the second as
    a conflict or a build already in progress: asked again, once the other build is done,
    the server answers that the identical index exists. A real conflict (another index of
    that name or keys) is still raised, after the last try.
    """
    if not models:
        return []
    for attempt in range(INDEX_RACE_TRIES):
        try:
            return coll.create_indexes(list(models))
        except OperationFailure as exc:
            if exc.code not in INDEX_RACE_CODES or attempt == INDEX_RACE_TRIES - 1:
                raise
            time.sleep(INDEX_RACE_PAUSE_SECONDS * (attempt + 1))
    raise AssertionError("unreachable")


def drop_indexes(coll: Collection, names: Sequence[str]) -> None:
    """Drop indexes by name; an index or collection that is already gone is not an error."""
    for name in names:
        try:
            coll.drop_index(name)
        except OperationFailure as exc:
            if exc.code not in (INDEX_NOT_FOUND, NAMESPACE_NOT_FOUND):
                raise
