"""What a batch run talks to: MongoDB, Redis, the definitions, HTTP clients, rate buckets."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
import redis
from pymongo.database import Database

from backfill_engine import clock
from backfill_engine.batch_context import current_batch
from backfill_engine.definition import Backfill
from backfill_engine.errors import BackfillError
from backfill_engine.health import HealthGate
from backfill_engine.hooks import hook_class
from backfill_engine.http_client import HttpSourceClient
from backfill_engine.rate_control import record_answer
from backfill_engine.ratelimit import RateLimiter, limiter_name
from backfill_engine.registry import load_definitions
from backfill_engine.settings import MONGO_MAX_IDLE_MS, Settings
from backfill_engine.sources import HttpEndpoint, Shape, Source, http_endpoint

WORKER_MONGO_TIMEOUT_MS = 10_000

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a worker process talks to, shared by its batch threads.

    The job's rate is per batch, not per process: the limiters follow the rate of the
    batch the calling thread runs (backfill_engine.batch_context.current_batch), so under
    `--pool threads` two jobs' batches in one process each keep their own rate.
    """

    settings: Settings
    db: Database
    redis: redis.Redis
    definitions: dict[str, Backfill] = field(default_factory=dict)
    # Backfills this process knows but cannot run, with the settings each lacks.
    lacking: dict[str, list[str]] = field(default_factory=dict)
    # How `backfill status` names this process when it leaves a batch to others (a
    # worker's Celery node name, e.g. `worker-1@host`).
    worker_name: str = field(default_factory=socket.gethostname)
    # Classes of the team's batch hooks (BACKFILL_HOOKS), built once per delivery.
    hook_classes: list[type[Any]] = field(default_factory=list)
    _limiters: dict[tuple[str, float, bool], RateLimiter] = field(default_factory=dict)
    _http: dict[tuple[HttpEndpoint, str | None], HttpSourceClient] = field(default_factory=dict)
    # One thread that dispatches the next batches once a slot is free (workers/tasks.py);
    # per runtime, so a forked child gets its own with its own runtime.
    after_batch: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="after-batch")
    )
    # This process's write latencies and replication lag, shared by its batch threads.
    health: HealthGate = field(init=False)

    def __post_init__(self) -> None:
        self.health = HealthGate(self.db, self.settings)

    @property
    def rate(self) -> float:
        """The rate of the job whose batch this thread runs (0: the settings' default)."""
        batch = current_batch()
        return batch.rate if batch is not None else 0.0

    @property
    def rate_auto(self) -> bool:
        """Whether that job runs `--rate auto` (follow and feed the bucket's controller)."""
        batch = current_batch()
        return batch.rate_auto if batch is not None else False

    def limiter(self, bucket: str) -> RateLimiter:
        """The shared token bucket of an API, at the current job's rate."""
        rate = self.rate or self.settings.rate_per_second
        # An auto bucket's rate moves every tick: one limiter per bucket, its fallback rate
        # updated, rather than one per rate ever seen.
        key = (bucket, 0.0 if self.rate_auto else rate, self.rate_auto)
        if key in self._limiters:
            self._limiters[key].rate = rate
        else:
            # Burst of one token: requests are spaced evenly, so no window of any length
            # sees more than the configured rate (plus the one request at its edge).
            # Named by the source's bucket (within this deployment's queue namespace): jobs
            # calling one API share its bucket, jobs calling different APIs do not.
            name = limiter_name(self.settings.queue, bucket)
            self._limiters[key] = RateLimiter(
                self.redis, name=name, rate=rate, burst=1, follow_controller=self.rate_auto
            )
        return self._limiters[key]

    def source_client(self, source: Source) -> HttpSourceClient | None:
        """The client for the HTTP API `source` declares (None: it calls none), under its
        rate bucket; what the engine puts in the batch's SourceContext."""
        endpoint = http_endpoint(source)
        return None if endpoint is None else self.http_for(endpoint, source.rate_bucket)

    def http_for(self, endpoint: HttpEndpoint, bucket: str | None) -> HttpSourceClient:
        """This process's pooled client for an API, calling under the shared `bucket`."""
        key = (endpoint, bucket)
        if key not in self._http:

            def acquire() -> None:
                if bucket is not None:
                    self.limiter(bucket).acquire()

            def pause(seconds: float) -> None:
                if bucket is not None:
                    self.limiter(bucket).pause(seconds)

            def answered(status: int, seconds: float) -> None:
                if bucket is not None and self.rate_auto:
                    self._report(bucket, status, seconds)

            client = http_client_for(
                endpoint,
                self.settings,
                before_request=acquire,
                on_throttle=pause,
                on_response=answered,
            )
            self._http[key] = client
        return self._http[key]

    def _report(self, bucket: str, status: int, seconds: float) -> None:
        """Tell the bucket's controller about one answer; never fail the request for it."""
        try:
            record_answer(self.redis, limiter_name(self.settings.queue, bucket), status, seconds)
        except redis.RedisError as exc:
            log.debug("answer not reported to the rate controller: %s", type(exc).__name__)


def unmet_settings(backfill: Backfill, env: Mapping[str, str]) -> list[str]:
    """The variables `backfill`'s source needs that `env` lacks: its HTTP API's URL, and its
    token unless the API answers without one (`token_required=False`)."""
    endpoint = http_endpoint(backfill.source)
    return endpoint.unmet(env) if endpoint is not None else []


def missing_settings(
    settings: Settings, definitions: dict[str, Backfill] | None = None
) -> list[tuple[str, list[str]]]:
    """(variable, the backfills that need it) for every setting a known backfill needs but
    is not set here, one entry per variable."""
    env = {**os.environ, **settings.to_env()}
    if definitions is None:
        definitions = worker_definitions(settings)
    needing: dict[str, list[str]] = {}
    for name, d in sorted(definitions.items()):
        for variable in unmet_settings(d, env):
            needing.setdefault(variable, []).append(name)
    return sorted(needing.items())


def lacking_line(variable: str, backfills: list[str]) -> str:
    """The one line a worker says at start for a setting it lacks."""
    names = ", ".join(repr(b) for b in backfills)
    which = "backfill" if len(backfills) == 1 else "backfills"
    return f"{variable} is not set: this worker will not take batches of {which} {names}"


def runnable(
    settings: Settings, definitions: dict[str, Backfill]
) -> tuple[dict[str, Backfill], dict[str, list[str]]]:
    """Split `definitions` into those this process can run and, for the others, what they
    lack: a worker starts with what it has and leaves the rest to workers that can."""
    env = {**os.environ, **settings.to_env()}
    can: dict[str, Backfill] = {}
    lacking: dict[str, list[str]] = {}
    for name, d in definitions.items():
        unmet = unmet_settings(d, env)
        if unmet:
            lacking[name] = unmet
        else:
            can[name] = d
    return can, lacking


def http_client_for(
    endpoint: HttpEndpoint,
    settings: Settings,
    *,
    shape: Shape | None = None,
    before_request: Callable[[], None] | None = None,
    on_throttle: Callable[[float], None] | None = None,
    on_response: Callable[[int, float], None] | None = None,
) -> HttpSourceClient:
    """A pooled HTTP client for an API, with the settings' timeouts and retry budget; its
    `fetch` asks in `shape` unless told otherwise (a source passes its own)."""
    # The settings' own variables first (a test or the stack may set them in code), then
    # the process environment, where a team's API URL and token live.
    env = {**os.environ, **settings.to_env()}
    url = env.get(endpoint.url_env)
    if not url:
        raise BackfillError(f"{endpoint.url_env} is not set: the backfill's HTTP source needs it")
    if not url.startswith(("http://", "https://")):
        raise BackfillError(f"{endpoint.url_env} must be an http:// or https:// URL")
    client = HttpSourceClient(
        url,
        None if endpoint.token_env is None else env.get(endpoint.token_env),
        shape=shape,
        connect_timeout=settings.http_connect_timeout,
        read_timeout=settings.http_read_timeout,
        max_retries=settings.http_max_retries,
        backoff_seconds=settings.http_backoff_seconds,
        request_deadline=settings.http_request_deadline,
        before_request=before_request,
        on_throttle=on_throttle,
        on_response=on_response,
    )
    return client


def build_runtime(settings: Settings, definitions: dict[str, Any] | None = None) -> Runtime:
    """Connect to MongoDB and Redis as the settings say, and load the backfill definitions."""
    if not settings.mongo_url:
        raise RuntimeError("MONGO_URL is not set for this worker")
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url,
        serverSelectionTimeoutMS=WORKER_MONGO_TIMEOUT_MS,
        maxIdleTimeMS=MONGO_MAX_IDLE_MS,
        appname="mongo-backfill-worker",
    )
    clock.attach(client)  # leases follow the server's clock, not this host's
    # The schema is checked by the first delivery (batch_take), where a server that fails
    # the check for a moment leaves the batch re-sent, not its message dropped.
    rds = redis.Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
    if definitions is None:
        definitions = worker_definitions(settings)
    can, lacking = runnable(settings, definitions)
    hooks = [hook_class(spec) for spec in settings.hooks]
    return Runtime(settings, client[settings.mongo_db], rds, can, lacking, hook_classes=hooks)


def worker_definitions(settings: Settings) -> dict[str, Backfill]:
    """The backfills this worker knows: BACKFILL_IMPORTS, then the project's migrations
    directory (both from the environment or the project config); nothing else."""
    directory = Path(settings.migrations_dir) if settings.migrations_dir else None
    return load_definitions(settings.imports, directory, settings.project_dir)
