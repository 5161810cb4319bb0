"""The Celery task: one message per batch; the batch run itself is the engine's."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import shared_task

from backfill_engine.batch_run import process_batch
from workers.runtime import get_runtime

log = logging.getLogger(__name__)


def worker_identity(task_id: str | None) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{(task_id or 'local')[:8]}"


@shared_task(
    name="backfill.batch", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def run_batch(self: Any, job_id: str, batch_no: int) -> str:
    """Process one batch of a backfill job."""
    if not isinstance(job_id, str) or not isinstance(batch_no, int) or isinstance(batch_no, bool):
        log.error("rejecting malformed task arguments")
        return "bad-args"
    return process_batch(
        get_runtime(), self.app, job_id, batch_no, worker_identity(self.request.id)
    )
