"""Prometheus metrics for every recent job, read from MongoDB on each scrape.

Nothing is counted in this process: job and batch documents are the truth, so any
number of `backfill metrics` endpoints (or none) can run, and a restart loses nothing.
One scrape costs three queries: the jobs, one aggregation over their batches, one over
their quarantine entries.

Fields read from batch documents with a default of 0 when absent (the engine records
some of them only from a given version on):
- `timings.<phase>_s` (lease, read, source, write, checkpoint, total): written on finish;
- `source.requests`, `source.http_429`, `source.http_5xx`: HTTP source requests made
  and answers of each kind, and `source.rate_wait_s`: seconds spent waiting for
  rate-limit tokens and 429 pauses (added with every checkpoint);
- `timings.throttle_s`: seconds held back by the database health throttle.

The job document's `throttle` record (backfill_engine.health) gives
`backfill_job_throttled{reason}`: 1 while workers hold the job back for that reason.

Every job series carries `kind`: `backfill` for a run, `revert` for a revert job
(`reverts: JOB`), so a dashboard never adds a revert's documents to a backfill's.
Revert jobs also export `backfill_revert_field_values_total{outcome}`, field values
restored, already as before, left as conflicts and unrestorable: summed from their
batches' `counters`, or read from `revert_counts` for an undo a migration's `down` ran in
its own process (backfill_engine.undo).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pymongo.errors
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pymongo.database import Database

from backfill_engine.health import REASON_KINDS, throttle_view
from backfill_engine.revert_step import REVERT_COUNTERS
from backfill_engine.states import (
    COUNTER_NAMES,
    DISPATCHABLE_JOB_STATES,
    METADATA,
    QUARANTINE,
    BatchStatus,
    JobStatus,
)
from orchestrator.errors import BackfillError

DEFAULT_METRICS_PORT = 9808
DEFAULT_METRICS_ADDRESS = "127.0.0.1"
DEFAULT_MAX_JOBS = 50  # newest jobs shown besides every active one
RATE_WINDOW_SECONDS = 60.0  # documents/s over the last minute of scrapes
MIN_WINDOW_SECONDS = 5.0  # below this the window is noise: fall back to the lifetime rate

LABELS = ("job", "backfill", "status", "kind")
KIND_BACKFILL, KIND_REVERT = "backfill", "revert"
PHASES = ("lease", "read", "source", "write", "checkpoint", "throttle", "total")
HTTP_FIELDS = ("requests", "http_429", "http_5xx")

# Every metric this collector exports (the Grafana dashboard test checks against it).
DOCUMENT_GAUGES = {
    "planned": "Documents planned for the job",
    "processed": "Documents processed (checkpointed) so far",
    **{name: f"Documents counted {name}" for name in COUNTER_NAMES},
    "quarantined": "Documents put in quarantine",
}
METRIC_NAMES = (
    "backfill_mongo_up",
    *(f"backfill_documents_{name}" for name in DOCUMENT_GAUGES),
    "backfill_batches",
    "backfill_batches_planned",
    "backfill_documents_per_second",
    "backfill_eta_seconds",
    "backfill_job_created_timestamp_seconds",
    "backfill_rate_limit_per_second",
    "backfill_batch_phase_seconds_total",
    "backfill_rate_limit_wait_seconds_total",
    "backfill_source_requests_total",
    "backfill_source_http_429_total",
    "backfill_source_http_5xx_total",
    "backfill_job_throttled",
    "backfill_revert_field_values_total",
)


@dataclass
class JobRow:
    """What one scrape knows about one job."""

    job: dict[str, Any]
    batches: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in BatchStatus})
    sums: dict[str, float] = field(default_factory=dict)
    quarantined: int = 0

    def total(self, key: str) -> float:
        return float(self.sums.get(key, 0) or 0)

    @property
    def kind(self) -> str:
        return KIND_REVERT if self.job.get("reverts") else KIND_BACKFILL

    def revert_values(self, outcome: str) -> float:
        """Field values of a revert job with this outcome (restored, already, ...)."""
        inline = self.job.get("revert_counts") or {}
        return self.total(f"r_{outcome}") + float(inline.get(outcome, 0) or 0)


def _batch_group() -> dict[str, Any]:
    group: dict[str, Any] = {
        "_id": {"job": "$job_id", "status": "$status"},
        "n": {"$sum": 1},
        "size": {"$sum": "$size"},
        "processed": {"$sum": "$processed"},
    }
    for name in COUNTER_NAMES:
        group[name] = {"$sum": f"$counters.{name}"}
    for name in REVERT_COUNTERS:
        group[f"r_{name}"] = {"$sum": f"$counters.{name}"}  # revert batches only
    for phase in PHASES:
        group[f"t_{phase}"] = {"$sum": f"$timings.{phase}_s"}  # $sum skips missing fields
    group["t_rate_wait"] = {"$sum": "$source.rate_wait_s"}
    for name in HTTP_FIELDS:
        group[f"c_{name}"] = {"$sum": f"$source.{name}"}
    return group


def read_jobs(db: Database, max_jobs: int = DEFAULT_MAX_JOBS) -> list[JobRow]:
    """The newest `max_jobs` jobs and every active one, with their batch and quarantine sums."""
    meta = db[METADATA]
    projection = {"dispatch_lock": 0, "params": 0}
    jobs = {
        j["_id"]: j
        for j in meta.find({"kind": "job"}, projection).sort("created_at", -1).limit(max_jobs)
    }
    active = [s.value for s in (*DISPATCHABLE_JOB_STATES, JobStatus.PAUSED)]
    for j in meta.find({"kind": "job", "status": {"$in": active}}, projection):
        jobs.setdefault(j["_id"], j)
    rows = {job_id: JobRow(job=j) for job_id, j in jobs.items()}
    if not rows:
        return []
    ids = list(rows)
    pipeline = [{"$match": {"job_id": {"$in": ids}}}, {"$group": _batch_group()}]
    for agg in meta.aggregate(pipeline):
        row = rows.get(agg["_id"]["job"])
        if row is None:
            continue
        row.batches[str(agg["_id"]["status"])] = int(agg["n"])
        for key, value in agg.items():
            if key not in ("_id", "n"):
                row.sums[key] = row.sums.get(key, 0) + (value or 0)
    quarantine: list[dict[str, Any]] = [
        {"$match": {"job_id": {"$in": ids}}},
        {"$group": {"_id": "$job_id", "n": {"$sum": 1}}},
    ]
    for agg in db[QUARANTINE].aggregate(quarantine):
        if agg["_id"] in rows:
            rows[agg["_id"]].quarantined = int(agg["n"])
    return list(rows.values())


def _utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def lifetime_rate(row: JobRow, now: dt.datetime) -> float:
    """Documents per second from the job's creation to its end (or now, while it runs)."""
    created = _utc(row.job.get("created_at"))
    if created is None:
        return 0.0
    end = _utc(row.job.get("finished_at")) or now
    seconds = (end - created).total_seconds()
    return row.total("processed") / seconds if seconds > 0 else 0.0


class JobMetrics(Collector):
    """A Prometheus collector over the jobs in one database, read afresh on every scrape."""

    def __init__(
        self,
        db: Callable[[], Database],
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
        window_seconds: float = RATE_WINDOW_SECONDS,
    ) -> None:
        self._db = db
        self.max_jobs = max_jobs
        self.window_seconds = window_seconds
        # (monotonic time, processed) per job, one per scrape, for the recent rate.
        self._seen: dict[str, deque[tuple[float, float]]] = {}

    def describe(self) -> list[Metric]:
        return []  # no fixed samples: the registry must call collect() on every scrape

    def _recent_rate(self, row: JobRow, now: float) -> float | None:
        seen = self._seen.setdefault(str(row.job["_id"]), deque())
        seen.append((now, row.total("processed")))
        while seen and now - seen[0][0] > self.window_seconds:
            seen.popleft()
        t0, p0 = seen[0]
        if now - t0 < MIN_WINDOW_SECONDS:
            return None
        return max(row.total("processed") - p0, 0.0) / (now - t0)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("backfill_mongo_up", "1 when MongoDB answered this scrape")
        try:
            rows = read_jobs(self._db(), self.max_jobs)
        except pymongo.errors.PyMongoError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._families(rows)

    def _families(self, rows: list[JobRow]) -> Iterator[Metric]:
        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=[*LABELS, *extra])

        documents = {
            name: gauge(f"backfill_documents_{name}", doc) for name, doc in DOCUMENT_GAUGES.items()
        }
        batches = gauge("backfill_batches", "Batches per state", ("state",))
        planned_batches = gauge("backfill_batches_planned", "Batches planned so far")
        speed = gauge(
            "backfill_documents_per_second",
            "Documents processed per second: last minute while active, lifetime once ended",
        )
        eta = gauge("backfill_eta_seconds", "Seconds left at the current rate (active jobs)")
        created = gauge("backfill_job_created_timestamp_seconds", "When the job was created")
        rate_limit = gauge("backfill_rate_limit_per_second", "Configured HTTP source requests/s")
        phases = counter(
            "backfill_batch_phase_seconds", "Seconds finished batches spent per phase", ("phase",)
        )
        rate_wait = counter(
            "backfill_rate_limit_wait_seconds", "Seconds batches waited for rate-limit tokens"
        )
        http = {
            "requests": counter("backfill_source_requests", "HTTP source requests made"),
            "http_429": counter("backfill_source_http_429", "HTTP source answers 429 (throttled)"),
            "http_5xx": counter("backfill_source_http_5xx", "HTTP source answers 5xx"),
        }
        throttled = gauge(
            "backfill_job_throttled",
            "1 while workers hold the job back for this reason (database health)",
            ("reason",),
        )
        reverted = counter(
            "backfill_revert_field_values",
            "Field values a revert job restored, found already as before, or left",
            ("outcome",),
        )
        mono, now = time.monotonic(), dt.datetime.now(dt.UTC)
        live = {str(r.job["_id"]) for r in rows}
        for gone in set(self._seen) - live:
            del self._seen[gone]
        for row in rows:
            job = row.job
            labels = [
                str(job["_id"]),
                str(job.get("backfill", "")),
                str(job.get("status", "")),
                row.kind,
            ]
            if row.kind == KIND_REVERT:
                for outcome in REVERT_COUNTERS:
                    reverted.add_metric([*labels, outcome], row.revert_values(outcome))
            planning = job.get("planning") or {}
            planned = max(float(planning.get("items", 0) or 0), row.total("size"))
            processed = row.total("processed")
            values = {"planned": planned, "processed": processed, "quarantined": row.quarantined}
            for name, family in documents.items():
                family.add_metric(labels, values.get(name, row.total(name)))
            for state, n in row.batches.items():
                batches.add_metric([*labels, state], n)
            planned_batches.add_metric(labels, float(planning.get("batches", 0) or 0))
            active = job.get("status") in {s.value for s in DISPATCHABLE_JOB_STATES}
            recent = self._recent_rate(row, mono) if active else None
            per_second = lifetime_rate(row, now) if recent is None else recent
            speed.add_metric(labels, per_second)
            if active and per_second > 0:
                eta.add_metric(labels, max(planned - processed, 0.0) / per_second)
            when = _utc(job.get("created_at"))
            if when is not None:
                created.add_metric(labels, when.timestamp())
            rate_limit.add_metric(labels, float(job.get("rate_per_second", 0) or 0))
            for phase in PHASES:
                phases.add_metric([*labels, phase], row.total(f"t_{phase}"))
            rate_wait.add_metric(labels, row.total("t_rate_wait"))
            for name, http_family in http.items():
                http_family.add_metric(labels, row.total(f"c_{name}"))
            view = throttle_view(job, now)
            for kind in REASON_KINDS:  # one series per reason, so none appears or vanishes
                held = view is not None and view.active and view.kind == kind
                throttled.add_metric([*labels, kind], 1.0 if held else 0.0)
        yield from documents.values()
        yield from (batches, planned_batches, speed, eta, created, rate_limit, throttled)
        yield from (phases, rate_wait, *http.values(), reverted)


@dataclass
class MetricsServer:
    """A running `/metrics` endpoint; `shutdown()` stops it."""

    url: str
    _httpd: Any

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def serve_metrics(db: Callable[[], Database], address: str, port: int) -> MetricsServer:
    """Serve the job metrics of `db()` at http://address:port/metrics on a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobMetrics(db))
    try:
        httpd, _thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:  # port taken, address not ours or not an address at all
        raise BackfillError(
            f"metrics cannot listen on {address}:{port}: {exc.strerror or exc}"
        ) from None

    host = f"[{address}]" if ":" in address else address
    return MetricsServer(url=f"http://{host}:{port}/metrics", _httpd=httpd)
