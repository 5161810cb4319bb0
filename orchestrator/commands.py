"""The orchestrator's verbs as plain functions; the CLI only parses and prints."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from pymongo.database import Database

from backfill_engine import notify
from backfill_engine.definition import Backfill
from backfill_engine.dispatch import BROKER_OUTAGES, TaskSender
from backfill_engine.notify import Event
from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.registry import lookup
from backfill_engine.schema import ensure_schema
from backfill_engine.scope import check_filter, combine
from backfill_engine.settings import MAX_BATCH_SIZE, Settings
from backfill_engine.states import DISPATCHABLE_JOB_STATES, METADATA, TERMINAL_JOB_STATES, JobStatus
from backfill_engine.store import now_utc
from backfill_engine.sweeper import sweep_job, swept_lately
from orchestrator import jobs
from orchestrator.errors import BackfillError
from orchestrator.job_events import changed
from orchestrator.rates import RateSpec, auto_bucket

log = logging.getLogger(__name__)

METADATA_MIGRATION = "20240405_create_backfill_metadata"  # creates the collections jobs need
# A waiting command's progress tick: three reads (job, batch summary, quarantine count).
# At 0.5 s they were a third of a fast job's MongoDB commands (docs/benchmarks.md).
WAIT_POLL_SECONDS = 1.0
RUN_ONLY = ("ids", "replay_of")  # job params that say what a run was, not how to run it


@dataclass
class Broker:
    """How the orchestrator reaches the queue: a task sender and a raw Redis client."""

    sender: TaskSender
    redis: redis.Redis
    queue: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Broker:
        url = settings.redis_url or "redis://127.0.0.1:6379/0"
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        # Imported here: importing backfill_workers.app builds the worker's app from the
        # environment, and the CLI must be able to report a bad variable as one line before that.
        from backfill_workers.app import create_app

        return cls(create_app(settings), client, settings.queue)

    def check(self) -> None:
        """Fail with one line if Redis does not answer."""
        from backfill_engine.redact import redact_url
        from orchestrator.errors import ServerUnreachableError

        try:
            self.redis.ping()
        except (redis.RedisError, OSError) as exc:
            url = self.redis.connection_pool.connection_kwargs
            where = f"{url.get('host', '?')}:{url.get('port', '?')}"
            raise ServerUnreachableError("Redis", redact_url(where), type(exc).__name__) from None


@dataclass(frozen=True)
class RunOptions:
    backfill: str = ""  # the backfill definition's name; required
    batch_size: int = 500
    max_in_flight: int = 8
    rate_per_second: float = 50.0  # fixed, or the start of `--rate auto`
    rate_auto: bool = False  # the bucket's controller moves the rate (rate_control.py)
    rate_ceiling: float | None = None  # `--rate auto:CEIL`
    ids: tuple[Any, ...] | None = None  # an explicit id list: --ids-file, or a replay
    source_job: str | None = None  # set for a replay of that job's quarantined items
    scope: tuple[tuple[str, Any], ...] = ()  # --filter, as items of the query
    limit: int | None = None
    params: tuple[tuple[str, Any], ...] = ()  # typed values of the backfill's declared params
    journal: bool = True  # False: `--no-journal`, workers record no before-images

    def audited(self) -> dict[str, Any]:
        """The options as the audit trail keeps them: an id list only by its length."""
        return {
            "backfill": self.backfill,
            "batch_size": self.batch_size,
            "max_in_flight": self.max_in_flight,
            "rate_per_second": self.rate_per_second,
            "ids": None if self.ids is None else len(self.ids),
            "source_job": self.source_job,
            "scope": dict(self.scope),
            "limit": self.limit,
            "params": dict(self.params),
            "journal": self.journal,
        }


def validate_run_options(opts: RunOptions, definitions: dict[str, Backfill] | None = None) -> None:
    """Refuse nonsense before anything is written."""
    if definitions is not None:
        lookup(definitions, opts.backfill)
    if opts.limit is not None and opts.limit < 1:
        raise BackfillError(f"--limit must be at least 1, got {opts.limit}")
    if not 1 <= opts.batch_size <= MAX_BATCH_SIZE:
        raise BackfillError(
            f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, got {opts.batch_size}"
        )
    if not 1 <= opts.max_in_flight <= 10_000:
        raise BackfillError(
            f"--max-in-flight must be between 1 and 10000, got {opts.max_in_flight}"
        )
    if not opts.rate_per_second > 0:
        raise BackfillError(f"--rate must be above 0 requests/s, got {opts.rate_per_second:g}")
    if opts.rate_auto and definitions is not None:
        auto_bucket(lookup(definitions, opts.backfill))


def launch(
    db: Database,
    broker: Broker,
    opts: RunOptions,
    *,
    on_batch: Callable[[int, int], None] | None = None,
    definitions: dict[str, Backfill] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Start (or join) the job and plan it to the end; return (job, created)."""
    if definitions is None:
        from backfill_engine.runtime import worker_definitions

        definitions = worker_definitions(Settings.from_env())
    validate_run_options(opts, definitions)
    backfill = lookup(definitions, opts.backfill)
    # The engine's collections and unique indexes, before any job is written: without
    # `active_key` unique, two `backfill run` started together would each create a job.
    ensure_schema(db)
    broker.check()
    params: dict[str, Any] = dict(opts.params)
    exclusive = None
    if opts.ids is not None:
        if opts.source_job:
            params["replay_of"] = opts.source_job
            exclusive = replay_key(db, opts.backfill, opts.source_job)
        else:
            exclusive = f"{opts.backfill}:ids:{uuid.uuid4().hex[:8]}"
    elif opts.scope or opts.limit is not None:
        # A slice runs beside the backfill's main job, never joins it (nor it the slice).
        exclusive = f"{opts.backfill}:slice:{uuid.uuid4().hex[:8]}"
    check_filter(db[backfill.collection], combine(backfill.query, dict(opts.scope)))
    job, created = start_or_join(
        db,
        backfill=opts.backfill,
        batch_size=opts.batch_size,
        max_in_flight=opts.max_in_flight,
        rate_per_second=opts.rate_per_second,
        params=params,
        exclusive_key=exclusive,
        collection=backfill.collection,
        scope=conjunction(backfill.query, dict(opts.scope)),
        limit=opts.limit,
        string_keyed=backfill.source.keyed_by_string,
        rate_auto=_rate_auto(opts, backfill),
        ids=None if opts.ids is None else list(opts.ids),
        journal=opts.journal,
    )
    if not created and exclusive is None and jobs.own_key(job) != opts.backfill:
        # An earlier release's retry gave a slice the main key: joining it would report
        # the whole backfill done when only the slice is.
        raise BackfillError(
            f"job {job['_id']} holds the active key of {opts.backfill} but did not run the "
            "whole backfill (a slice retried by an earlier release); wait for it to end or "
            "cancel it, then run again"
        )
    if created:
        changed(db, job["_id"], "run", opts.audited(), event=Event.STARTED)
    if job["status"] in DISPATCHABLE_JOB_STATES:
        plan_job(db, broker.sender, broker.queue, job["_id"], on_batch=on_batch)
    return jobs.get_job(db, job["_id"]), created


def replay_key(db: Database, backfill: str, source_job: str) -> str:
    """The active key of the next replay of `source_job`: one per replay generation.

    A retry while an earlier replay still runs gets a new job for the items quarantined
    since; two retries at the same moment compute the same key, and the second is refused
    (replay_starter) rather than joining a job whose id list lacks its items.
    """
    earlier = db[METADATA].count_documents({"kind": "job", "params.replay_of": source_job})
    return f"{backfill}:replay:{source_job}:{earlier + 1}"


def conjunction(*queries: Mapping[str, Any] | None) -> dict[str, Any]:
    """`combine` of the queries, each conjunct once: a replay passes the scope of the job it
    replays, which already holds the definition's query."""
    parts: list[Mapping[str, Any]] = []
    for query in queries:
        if not query:
            continue
        for part in query["$and"] if list(query) == ["$and"] else [query]:
            if part not in parts:
                parts.append(part)
    return combine(*parts)


def _rate_auto(opts: RunOptions, backfill: Backfill) -> dict[str, Any] | None:
    if not opts.rate_auto:
        return None
    spec = RateSpec(auto=True, ceiling=opts.rate_ceiling)
    return spec.auto_doc(auto_bucket(backfill), opts.rate_per_second, "start", now_utc())


def wait_for(
    db: Database,
    broker: Broker,
    settings: Settings,
    job_id: str,
    *,
    on_tick: Callable[[jobs.JobSummary], None] | None = None,
    tick_seconds: float = WAIT_POLL_SECONDS,
    timeout: float | None = None,
    stop_when_paused: bool = False,
) -> jobs.JobSummary:
    """Sweep and report until the job reaches a final state (or `timeout` seconds pass).

    Each poll reads the job document alone; `on_tick` gets the whole summary (batch counts
    and totals: an aggregation over the job's batches) every `tick_seconds`, and the summary
    returned is built once, at the end.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last_sweep = 0.0
    last_tick = -math.inf
    outage: str | None = None
    ended = [s.value for s in TERMINAL_JOB_STATES]
    while True:
        now = time.monotonic()
        job = jobs.get_job(db, job_id)
        if now - last_sweep >= settings.sweep_interval_seconds:
            if job["status"] in DISPATCHABLE_JOB_STATES:
                try:
                    if not job["planning"].get("done"):
                        # The planner that started this job died: carry on from its cursor.
                        plan_job(db, broker.sender, broker.queue, job_id)
                    # Workers sweep every active job once per interval between them; this
                    # command sweeps its own only when none did (none alive, say).
                    if not swept_lately(broker.redis, broker.queue):
                        sweep_job(
                            db,
                            broker.sender,
                            broker.queue,
                            job_id,
                            redispatch_seconds=settings.redispatch_seconds,
                            broker=broker.redis,
                        )
                    outage = None
                except BROKER_OUTAGES as exc:
                    # Redis restarting: keep watching; the next sweep re-sends what it lost.
                    if outage is None:
                        log.warning("broker unreachable (%s); still watching", type(exc).__name__)
                    outage = type(exc).__name__
                job = jobs.get_job(db, job_id)  # the sweep may have completed it
            notify.deliver_due(db, settings.notify_url, settings.secrets)
            last_sweep = now
        summary = None
        if on_tick is not None and now - last_tick >= tick_seconds:
            last_tick = now
            summary = jobs.summarize(db, job_id, job)
            on_tick(summary)
        status = job["status"]
        if (
            status in ended
            or (stop_when_paused and status == JobStatus.PAUSED.value)
            or (deadline is not None and time.monotonic() > deadline)
        ):
            return summary or jobs.summarize(db, job_id, job)
        time.sleep(WAIT_POLL_SECONDS)


def replay_starter(
    db: Database, broker: Broker, settings: Settings
) -> Callable[[list[Any], str], str]:
    """What `retry` uses to replay quarantined ids as their own job.

    The replay runs with the params and the scope (definition query and --filter) of the
    job it replays: an item refused under them must not be written without them.
    """

    def start(ids: list[Any], source_job: str) -> str:
        source = jobs.get_job(db, source_job)
        params = {k: v for k, v in (source.get("params") or {}).items() if k not in RUN_ONLY}
        opts = RunOptions(
            backfill=source["backfill"],
            batch_size=int(source["batch_size"]),
            max_in_flight=int(source["max_in_flight"]),
            rate_per_second=float(source["rate_per_second"]),
            rate_auto=bool(source.get("rate_auto")),
            rate_ceiling=(source.get("rate_auto") or {}).get("ceiling"),
            ids=tuple(ids),
            source_job=source_job,
            scope=tuple((source.get("scope") or {}).items()),
            params=tuple(sorted(params.items())),
            journal=source.get("journal") is not False,
        )
        job, created = launch(db, broker, opts)
        if not created:
            raise BackfillError(
                f"another retry of {source_job} is replaying its items right now (job "
                f"{job['_id']}); run `backfill retry {source_job}` again for any it left"
            )
        return str(job["_id"])

    return start
