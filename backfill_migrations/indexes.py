"""Index keys, an IndexModel builder, and create/drop helpers that are safe to re-run."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import pymongo
from pymongo import IndexModel
from pymongo.collection import Collection

from backfill_engine import ddl
from backfill_engine.schema import ENGINE_COLLECTIONS, ensure_schema, is_retired

Keys = list[tuple[str, Any]]

# While a build waits on the server, a line says how long it has waited this often.
WAIT_REPORT_SECONDS = 5.0

logger = logging.getLogger(__name__)
# Where build lines go: the runner points it at its `log` for the migration it runs.
_report: ContextVar[Callable[[str], None] | None] = ContextVar("index_report", default=None)


@contextlib.contextmanager
def reporting_to(log: Callable[[str], None]) -> Iterator[None]:
    """Within the block, index builds on this thread say what they wait for through `log`."""
    token = _report.set(log)
    try:
        yield
    finally:
        _report.reset(token)


@contextlib.contextmanager
def _waiting(what: str, every: float) -> Iterator[None]:
    """Say what we wait for now, how long every `every` seconds, and when it is done."""
    say = _report.get() or (lambda m: logger.info("%s", m))
    say(f"  waiting for the server to build {what}")
    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(every):
            say(f"  still building {what}: {time.monotonic() - started:,.0f} s")

    ticker = threading.Thread(target=tick, daemon=True, name="index-build-report")
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
    say(f"  built {what} in {time.monotonic() - started:,.1f} s")


def asc(*fields: str) -> Keys:
    """Ascending keys, e.g. asc("job_id", "batch_no")."""
    return [(f, pymongo.ASCENDING) for f in fields]


def desc(*fields: str) -> Keys:
    """Descending keys."""
    return [(f, pymongo.DESCENDING) for f in fields]


def text(*fields: str) -> Keys:
    """Text-index keys (not every server supports text indexes)."""
    return [(f, pymongo.TEXT) for f in fields]


class IndexBuilder:
    """Options for one index; build() returns a pymongo IndexModel."""

    def __init__(self, keys: Keys | str) -> None:
        self._keys: Keys = asc(keys) if isinstance(keys, str) else list(keys)
        if not self._keys:
            raise ValueError("an index needs at least one key")
        self._options: dict[str, Any] = {}

    def name(self, name: str) -> IndexBuilder:
        self._options["name"] = name
        return self

    def unique(self) -> IndexBuilder:
        self._options["unique"] = True
        return self

    def partial(self, filter_: dict[str, Any]) -> IndexBuilder:
        """Index only documents matching `filter_` (partialFilterExpression)."""
        self._options["partialFilterExpression"] = filter_
        return self

    def sparse(self) -> IndexBuilder:
        self._options["sparse"] = True
        return self

    def ttl(self, seconds: int) -> IndexBuilder:
        """Expire documents `seconds` after the date in the (single) key field."""
        if seconds < 0:
            raise ValueError("ttl seconds must be >= 0")
        self._options["expireAfterSeconds"] = seconds
        return self

    def build(self) -> IndexModel:
        return IndexModel(self._keys, **self._options)


def index(keys: Keys | str) -> IndexBuilder:
    """Start an index on `keys` (from asc/desc/text, or a field name for ascending)."""
    return IndexBuilder(keys)


def _model(m: IndexModel | IndexBuilder) -> IndexModel:
    return m.build() if isinstance(m, IndexBuilder) else m


def create_indexes(coll: Collection, *models: IndexModel | IndexBuilder) -> list[str]:
    """Create the indexes (a no-op for ones that already exist identically); return their names.

    On one of the engine's own collections, the engine sets it up first, and an index its
    layout retired is not created again (20240405 still names the first release's). A
    build reads the whole collection and the call returns only when it is done, so it says
    what it waits for, and how long while it lasts (`reporting_to`).
    """
    if not models:
        return []
    built = [_model(m) for m in models]
    if coll.name in ENGINE_COLLECTIONS:
        ensure_schema(coll.database)
        built = [m for m in built if not is_retired(coll.name, m.document["name"])]
    existing = {ix["name"] for ix in coll.list_indexes()}
    new = [m.document["name"] for m in built if m.document["name"] not in existing]
    documents = coll.estimated_document_count() if new else 0
    if not documents:
        return ddl.create_indexes(coll, built)  # nothing to read: no wait worth a line
    noun = "index" if len(new) == 1 else "indexes"
    what = f"{noun} {', '.join(new)} on {coll.name} ({documents:,} documents)"
    with _waiting(what, WAIT_REPORT_SECONDS):
        return ddl.create_indexes(coll, built)


def drop_indexes(coll: Collection, *names: str | IndexModel | IndexBuilder) -> None:
    """Drop indexes by name; an index or collection that is already gone is not an error."""
    ddl.drop_indexes(coll, [n if isinstance(n, str) else _model(n).document["name"] for n in names])
