"""What follows every operator change of a job: an audit entry and, for a transition, a notice."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from backfill_engine import notify
from orchestrator import audit


def changed(
    db: Database,
    job_id: str,
    verb: str,
    params: dict[str, Any] | None = None,
    *,
    event: notify.Event | None = None,
    reason: str | None = None,
) -> None:
    """Record `verb` on `job_id` in its audit trail and queue the notice for `event`.

    Called only after the verb's guarded update won, so each transition is noticed once.
    Neither step raises: the change has happened whatever they manage to record.
    """
    audit.record(db, job_id, verb, params)
    if event is not None:
        notify.job_event(db, job_id, event, reason=reason)
