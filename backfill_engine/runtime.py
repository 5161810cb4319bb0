"""What a batch run talks to: MongoDB, Redis, the definitions, HTTP clients, rate buckets."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
import redis
from pymongo.database import Database

from backfill_engine import clock
from backfill_engine.definition import Backfill
from backfill_engine.errors import BackfillError
from backfill_engine.health import HealthGate
from backfill_engine.http_client import HttpSourceClient
from backfill_engine.rate_control import record_answer
from backfill_engine.ratelimit import RateLimiter, limiter_name
from backfill_engine.registry import load_definitions
from backfill_engine.schema import ensure_schema
from backfill_engine.settings import Settings
from backfill_engine.sources import HttpSource

WORKER_MONGO_TIMEOUT_MS = 10_000

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a worker process talks to; `rate` and `rate_auto` are set per job before each batch."""

    settings: Settings
    db: Database
    redis: redis.Redis
    definitions: dict[str, Backfill] = field(default_factory=dict)
    rate: float = 0.0
    rate_auto: bool = False  # the job runs `--rate auto`: follow and feed the bucket's controller
    _limiters: dict[tuple[str, float, bool], RateLimiter] = field(default_factory=dict)
    _http: dict[tuple[str, str | None, str], HttpSourceClient] = field(default_factory=dict)
    # One thread that dispatches the next batches once a slot is free (workers/tasks.py);
    # per runtime, so a forked child gets its own with its own runtime.
    after_batch: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="after-batch")
    )
    # This process's write latencies and replication lag, shared by its batch threads.
    health: HealthGate = field(init=False)

    def __post_init__(self) -> None:
        self.health = HealthGate(self.db, self.settings)

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

    def http_for(self, source: HttpSource) -> HttpSourceClient:
        """This process's pooled client for an HTTP source, calling under its bucket."""
        key = (source.url_env, source.token_env, source.path)
        if key not in self._http:
            bucket = source.rate_bucket

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
                source,
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


def missing_source_urls(
    settings: Settings, definitions: dict[str, Backfill] | None = None
) -> list[tuple[str, str]]:
    """(URL variable, backfill) for every HTTP source the backfills need but is not set."""
    env = {**os.environ, **settings.to_env()}
    if definitions is None:
        definitions = worker_definitions(settings)
    return [
        (d.source.url_env, name)
        for name, d in sorted(definitions.items())
        if isinstance(d.source, HttpSource) and not env.get(d.source.url_env)
    ]


def http_client_for(
    source: HttpSource,
    settings: Settings,
    *,
    before_request: Callable[[], None] | None = None,
    on_throttle: Callable[[float], None] | None = None,
    on_response: Callable[[int, float], None] | None = None,
) -> HttpSourceClient:
    """A pooled HTTP client for `source`, with the settings' timeouts and retry budget."""
    # The settings' own variables first (a test or the stack may set them in code), then
    # the process environment, where a team's API URL and token live.
    env = {**os.environ, **settings.to_env()}
    url = env.get(source.url_env)
    if not url:
        raise BackfillError(f"{source.url_env} is not set: the backfill's HTTP source needs it")
    if not url.startswith(("http://", "https://")):
        raise BackfillError(f"{source.url_env} must be an http:// or https:// URL")
    client = HttpSourceClient(
        url,
        None if source.token_env is None else env.get(source.token_env),
        path=source.path,
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
        appname="mongo-backfill-worker",
    )
    clock.attach(client)  # leases follow the server's clock, not this host's
    ensure_schema(client[settings.mongo_db])  # once per process; refuses another release's
    rds = redis.Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
    if definitions is None:
        definitions = worker_definitions(settings)
    return Runtime(settings, client[settings.mongo_db], rds, definitions)


def worker_definitions(settings: Settings) -> dict[str, Backfill]:
    """The backfills this worker knows: BACKFILL_IMPORTS, then the migrations directory."""
    directory = Path(settings.migrations_dir) if settings.migrations_dir else None
    return load_definitions(settings.imports, directory)
