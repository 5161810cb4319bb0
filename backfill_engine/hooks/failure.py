"""The failure policy: which errors retry, which fail a batch, which pause its job; and what
to do with a batch this worker cannot run. The core carries the decision out."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from typing import TYPE_CHECKING

import pymongo.errors

from backfill_engine import store
from backfill_engine.batch_context import BatchContext
from backfill_engine.batch_outcome import (
    TRANSIENT_ERRORS,
    BatchOutcome,
    Decision,
    LeasedTooOften,
    error_text,
    retry_or_fail,
)
from backfill_engine.dispatch import SERVER_OUTAGES, TaskSender, send_batch
from backfill_engine.hooks.base import BatchHook
from backfill_engine.http_client import SourceAuthError
from backfill_engine.schema import SchemaMismatchError
from backfill_engine.states import METADATA

if TYPE_CHECKING:
    from backfill_engine.runtime import Runtime

UNKNOWN_RETRY_SECONDS = 5.0  # about when a batch this worker cannot run is offered again


def unknown_retry_seconds() -> float:
    """When to offer a batch this worker cannot run again: about UNKNOWN_RETRY_SECONDS, at
    random. Idle workers wait on the queue in turns, and the longest waiting takes the next
    message; a fixed delay keeps the re-send in step with those turns, so the same worker,
    the one that cannot run it, could take it back every time while one that can waits."""
    return UNKNOWN_RETRY_SECONDS * random.uniform(0.5, 1.5)


class FailurePolicy(BatchHook):
    """Transient errors retry with backoff until the last attempt; a bug or an unforeseen
    input counts as a failed attempt too, so the batch ends `failed` with its error instead
    of looping via the sweeper; a refused credential or another release's metadata layout
    pauses the job, since only an operator can fix either."""

    def __init__(self, rt: Runtime, sender: TaskSender) -> None:
        self.rt, self.sender = rt, sender

    def on_error(self, batch: BatchContext, exc: BaseException) -> Decision | None:
        if isinstance(exc, LeasedTooOften):
            return Decision.fail(str(exc))
        if isinstance(exc, SchemaMismatchError):
            # Another release's layout: writing on would collide or mix names. Hand it back.
            return Decision.pause(str(exc), str(exc), BatchOutcome.SCHEMA_PAUSED)
        if isinstance(exc, SourceAuthError):
            reason = f"the source rejected our credentials: {exc}"
            return Decision.pause(str(exc), reason, BatchOutcome.AUTH_PAUSED)
        if not isinstance(exc, TRANSIENT_ERRORS):
            batch.log.error("unexpected error: %s", error_text(exc), exc_info=exc)
        return retry_or_fail(exc, batch.attempts, self.rt.settings.max_attempts)

    def on_unknown_backfill(self, batch: BatchContext, name: str, unmet: list[str] | None) -> None:
        """Leave the batch to a worker that can run it: not leased, re-sent later; the job
        records which workers lack the definition or which setting, so `status` can say
        so instead of the job silently stalling."""
        host = self.rt.worker_name
        if unmet:
            batch.log.error("backfill %r needs %s, not set on this worker; not taken", name, unmet)
            record = {"workers_lacking_settings": f"{host}: {', '.join(unmet)}"}
        else:
            batch.log.error(
                "backfill %r is not known to this worker (BACKFILL_IMPORTS); not taken", name
            )
            record = {"unknown_to_workers": host}
        try:
            self.rt.db[METADATA].update_one(
                {"_id": batch.job_id, "kind": "job"}, {"$addToSet": record}
            )
            delay = unknown_retry_seconds()
            resend_at = store.now_utc() + dt.timedelta(seconds=delay)
            bid = store.batch_id(batch.job_id, batch.batch_no)
            with contextlib.suppress(pymongo.errors.PyMongoError):  # else a sweeper re-sends
                store.note_resent(self.rt.db[METADATA], bid, resend_at)  # not lost meanwhile
            send_batch(
                self.sender,
                self.rt.settings.queue,
                batch.job_id,
                batch.batch_no,
                countdown=delay,
            )
        except SERVER_OUTAGES as exc:
            batch.log.warning("could not re-send (%s); left to the sweeper", type(exc).__name__)
