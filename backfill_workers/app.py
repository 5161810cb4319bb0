"""The Celery application: Redis broker, JSON only, late acks, one task per batch.

State lives in MongoDB, so there is no result backend: a task's only output is the
batch document it updates.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery, signals

from backfill_engine.redact import RedactingFilter
from backfill_engine.settings import Settings

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
EXIT_SCHEMA_MISMATCH = 3  # the metadata is another release's layout


def create_app(settings: Settings) -> Celery:
    """A Celery app for `settings` (workers run the module-level one; senders build their own)."""
    celery = Celery("mongo_backfill", broker=settings.redis_url or DEFAULT_BROKER_URL)
    celery.conf.update(
        # JSON only: a pickled message pushed onto the queue is refused, never unpickled.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        result_accept_content=["json"],
        # Ack after the batch is finished and re-queue when a worker process dies
        # mid-batch; the batch lease makes a second delivery harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.queue,
        task_create_missing_queues=True,
        # Redis redelivers an unacked message after this; it must outlast the longest
        # batch. Faster recovery of lost work is the sweeper's job, not this timeout's.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=5,
        # Events feed Flower: the workers' own, in the order they happen. No `task-sent`:
        # it names the task `backfill.batch`, not its title, and a late one (the sender
        # descheduled after publishing) renames a batch that already ran in Flower.
        worker_send_task_events=True,
        task_send_sent_event=False,
        worker_redirect_stdouts=False,
    )
    return celery


app = create_app(Settings.from_env())


@signals.worker_init.connect
def _refuse_another_release(sender: Any = None, **_: Any) -> None:
    """A worker starts only on metadata in its release's layout (else one line, exit 3)."""
    from backfill_workers.runtime import check_schema_at_start

    problem = check_schema_at_start(Settings.from_env())
    if problem:
        print(f"error: {problem}", file=sys.stderr, flush=True)
        # Before the pool starts: nothing to clean up, and Celery would print a traceback.
        os._exit(EXIT_SCHEMA_MISMATCH)


# This process's background loops (the sweeper, the rate controller), stopped at shutdown.
_loops: list[Any] = []
# A warm shutdown waits this long for a loop's current tick: a notice being posted (one
# POST ends within notify.DELIVERY_DEADLINE_SECONDS, 10 s) is then recorded delivered.
LOOP_STOP_SECONDS = 12.0


@signals.worker_ready.connect
def _start_autosweep(sender: Any = None, **_: Any) -> None:
    """Workers recover lost work themselves, with or without an orchestrator watching."""
    from backfill_workers.autosweep import AutoSweeper

    settings = Settings.from_env()
    if settings.worker_sweep and settings.mongo_url:
        _loops.append(AutoSweeper(settings, app))
    if settings.rate_control_interval_seconds > 0 and settings.mongo_url:
        # `--rate auto`: every worker runs one; per bucket a Redis lock lets one of them act.
        from backfill_workers.ratecontrol import RateControlThread

        _loops.append(RateControlThread(settings))
    for loop in _loops:
        loop.start()


@signals.worker_shutdown.connect
def _stop_background_loops(sender: Any = None, **_: Any) -> None:
    """Let each loop end its current tick: a daemon thread cut off mid-delivery of a notice
    left it leased but unrecorded, and another worker posted it again once the lease ran out."""
    for loop in _loops:
        loop.stop()
    for loop in _loops:
        loop.stop(timeout=LOOP_STOP_SECONDS)
    _loops.clear()


@signals.worker_ready.connect
def _say_what_cannot_run(sender: Any = None, **_: Any) -> None:
    """One line per setting the known backfills lack here: their batches are left to others.

    `backfill worker` says these lines itself before Celery starts (BACKFILL_LACKING_SAID).
    """
    from backfill_engine.runtime import lacking_line, missing_settings

    if os.environ.get("BACKFILL_LACKING_SAID"):
        return
    settings = Settings.from_env()
    try:
        unset = missing_settings(settings)
    except Exception as exc:  # a definition that fails to load is reported when used
        logging.getLogger(__name__).warning("backfills not checked: %s", exc)
        return
    for variable, backfills in unset:
        logging.getLogger(__name__).warning("%s", lacking_line(variable, backfills))


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _scrub_worker_logs(logger: logging.Logger, **_: Any) -> None:
    """Worker log lines never carry a password or token."""
    secrets = Settings.from_env().secrets
    for handler in logger.handlers:
        handler.addFilter(RedactingFilter(secrets))


import backfill_workers.tasks  # noqa: E402,F401  (registers the batch task on this app)
