"""The `schema_migrations` collection: one record per version, each state change in one function.

Every write first calls the guard (the lease's `confirm`), so a runner that lost the lock
stops before touching history. Confirming also extends the lease, which leaves a whole lease
for the write that follows.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable
from typing import Any

from pymongo.database import Database

from backfill_engine.redact import redact_text
from backfill_migrations.plan import Available, Direction, HistoryRecord, MigrationState

HISTORY_COLLECTION = "schema_migrations"
MAX_ERROR_CHARS = 2000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _record(doc: dict[str, Any]) -> HistoryRecord:
    return HistoryRecord(
        version=doc["_id"],
        state=MigrationState(doc["state"]),
        checksum=doc.get("checksum"),
        description=doc.get("description", ""),
        applied_at=doc.get("applied_at"),
        execution_time=doc.get("execution_time"),
        error=doc.get("error"),
        host=doc.get("host"),
        pid=doc.get("pid"),
        direction=Direction(doc.get("direction", Direction.UP.value)),
    )


def format_error(exc: BaseException) -> str:
    """One line for the record and the CLI: type, message, credentials scrubbed."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return redact_text(text)[:MAX_ERROR_CHARS]


def read_history(db: Database) -> list[HistoryRecord]:
    """All records, in version order (reading never creates the collection)."""
    return [_record(d) for d in db[HISTORY_COLLECTION].find().sort("_id", 1)]


class History:
    """State transitions of history records, each guarded by the lock."""

    def __init__(self, db: Database, guard: Callable[[], None]) -> None:
        self._coll = db[HISTORY_COLLECTION]
        self._guard = guard
        self._host = socket.gethostname()
        self._pid = os.getpid()

    def _write(self, version: str, set_: dict[str, Any], unset: tuple[str, ...] = ()) -> None:
        self._guard()
        update: dict[str, Any] = {"$set": {**set_, "updated_at": _now()}}
        if unset:
            update["$unset"] = {k: "" for k in unset}
        self._coll.update_one({"_id": version}, update, upsert=True)

    def start(self, m: Available, direction: Direction) -> None:
        """Record that `m` is now running in `direction` (a crash leaves it `running`)."""
        self._write(
            m.version,
            {
                "state": MigrationState.RUNNING.value,
                "direction": direction.value,
                "description": m.description,
                "checksum": m.checksum,
                "host": self._host,
                "pid": self._pid,
                "started_at": _now(),
            },
            unset=("error",),
        )

    def applied(self, m: Available, execution_time: float, *, manual: bool = False) -> None:
        """Record a successful up (or an operator's mark-applied when `manual`)."""
        fields: dict[str, Any] = {
            "state": MigrationState.APPLIED.value,
            "direction": Direction.UP.value,
            "description": m.description,
            "checksum": m.checksum,
            "applied_at": _now(),
            "execution_time": execution_time,
            "host": self._host,
            "pid": self._pid,
            "manual": manual,
        }
        self._write(m.version, fields, unset=("error",))

    def failed(self, version: str, direction: Direction, error: str, execution_time: float) -> None:
        """Record a failure; the run stops and later runs refuse until retried."""
        self._write(
            version,
            {
                "state": MigrationState.FAILED.value,
                "direction": direction.value,
                "error": error,
                "execution_time": execution_time,
            },
        )

    def rolled_back(self, version: str, execution_time: float) -> None:
        """Record a successful down; the version counts as pending again."""
        self._write(
            version,
            {
                "state": MigrationState.ROLLED_BACK.value,
                "direction": Direction.DOWN.value,
                "rolled_back_at": _now(),
                "execution_time": execution_time,
            },
            unset=("error", "applied_at"),
        )
