"""The scenarios: the database's ceiling, the naive loop, and the full system (first run, rerun)."""

from __future__ import annotations

import datetime as dt
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import requests
from pymongo.database import Database

from backfill_engine.runtime import worker_definitions
from backfill_engine.settings import Settings
from backfill_engine.states import METADATA
from backfill_migrations import runner
from bench import local_catalog
from bench.data import precomputed_updates, seed
from bench.probes import CpuMeter, RssSampler, calls_delta, cpu_seconds, machine_busy
from bench.servers import Servers, start_servers, wait_workers_ready
from bench.traffic import WORKER_ARGV, WORKER_ENV, TrafficMeter
from migrations import VERSIONS_DIR
from migrations.versions._catalog import CATALOG_FIELDS, PRODUCTS, SYNCED_AT_FIELD
from orchestrator.commands import Broker, RunOptions, launch, wait_for
from orchestrator.stack import ManagedProcess, start_worker

METADATA_VERSION = "20240405_create_backfill_metadata"
WORKER_READY_TIMEOUT = 90.0
HTTP_TIMEOUT_SECONDS = 10.0
OWN_CPU_GROUPS = ("workers", "orchestrator")  # our processes, as opposed to the servers
TIMING_KEYS = ("total_s", "lease_s", "read_s", "source_s", "write_s", "checkpoint_s")
_DISPATCH_RE = re.compile(r"after_s=([0-9.]+)")


@dataclass
class Row:
    """One line of the results table."""

    scenario: str  # ceiling | naive | system | rerun
    label: str
    products: int
    seconds: float
    latency_ms: float | None = None
    pool: str | None = None
    processes: int | None = None
    concurrency: int | None = None
    writes: int = 0
    catalog_requests: int | None = None
    batches: int | None = None
    peak_rss_mb: float | None = None
    redis_cmds_per_batch: float | None = None
    redis_top: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # mean seconds per batch
    overhead_pct: float | None = None
    x_ceiling: float | None = None
    x_naive: float | None = None
    x_first_run: float | None = None  # rerun rows: first-run seconds / rerun seconds
    # products/s of the ceiling measured right before this configuration, on the same
    # server: its writes get dearer as the oplog fills (docs/benchmarks.md)
    ceiling_ps: float | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process group
    # database commands per batch over the run (serverStatus opcounters deltas), by kind
    mongo_cmds_per_batch: float | None = None
    mongo_top: dict[str, int] = field(default_factory=dict)
    # MongoDB commands and bytes as every client of the run saw them (bench.traffic)
    mongo_traffic: dict[str, Any] = field(default_factory=dict)
    # the whole machine's CPU use over the run (other users' load included), % of all cores
    machine_busy_pct: float | None = None

    @property
    def slots(self) -> int | None:
        """Worker pool slots: processes x concurrency."""
        if self.processes is None or self.concurrency is None:
            return None
        return self.processes * self.concurrency

    @property
    def own_cpu_ms_per_product(self) -> float | None:
        """CPU of our own processes (worker trees and the bench process) per product."""
        if not self.products or not all(g in self.cpu_s for g in OWN_CPU_GROUPS):
            return None
        return 1000 * sum(self.cpu_s[g] for g in OWN_CPU_GROUPS) / self.products

    @property
    def db_busy(self) -> float | None:
        """SecantusDB CPU seconds per wall second: near 1.0 its one interpreter is saturated."""
        cpu = self.cpu_s.get("secantusdb")
        return None if cpu is None or self.seconds <= 0 else cpu / self.seconds

    @property
    def catalog_rps(self) -> float | None:
        """Catalog API requests per second over the run."""
        if self.catalog_requests is None or self.seconds <= 0:
            return None
        return self.catalog_requests / self.seconds

    @property
    def db_ms_per_product(self) -> float | None:
        """SecantusDB CPU per product: a load-independent view of what the run cost the DB."""
        cpu = self.cpu_s.get("secantusdb")
        return None if cpu is None or not self.products else 1000 * cpu / self.products

    @property
    def products_per_s(self) -> float:
        return self.products / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        db_ms = self.db_ms_per_product
        own = self.own_cpu_ms_per_product
        busy = self.db_busy
        return {
            **asdict(self),
            "products_per_s": round(self.products_per_s, 1),
            "db_cpu_ms_per_product": None if db_ms is None else round(db_ms, 3),
            "own_cpu_ms_per_product": None if own is None else round(own, 4),
            "db_busy": None if busy is None else round(busy, 3),
        }


@dataclass
class Bench:
    """Shared state of one bench run: the servers, the seeded documents, where logs go."""

    servers: Servers
    docs: list[dict[str, Any]]
    log_dir: Path
    rate_per_second: float
    batch_size: int
    read_ids: int = 0
    say: Callable[[str], None] = print
    _runs: int = 0

    def fresh_db(self, n: int) -> Database:
        """A new database holding the first `n` seeded products and `backfill_metadata`."""
        self._runs += 1
        db = self.servers.client[f"bench_{self._runs:03d}"]
        self.servers.client.drop_database(db.name)
        seed(db, self.docs[:n])
        return db

    def drop(self, db: Database) -> None:
        self.servers.client.drop_database(db.name)


@contextmanager
def _same_bench(bench: Bench) -> Iterator[Bench]:
    yield bench


# Gives a series' run (named by a tag) the Bench it runs on, e.g. `fresh_bench`.
BenchFor = Callable[[str], AbstractContextManager[Bench]]


def bench_on(bench: Bench, bench_for: BenchFor | None, tag: str) -> AbstractContextManager[Bench]:
    """The Bench a series' run tagged `tag` runs on: `bench_for(tag)`, or `bench` itself."""
    return bench_for(tag) if bench_for is not None else _same_bench(bench)


@contextmanager
def fresh_bench(like: Bench, tag: str) -> Iterator[Bench]:
    """A Bench like `like` (documents, rate, batch size, ids per read) on servers started
    for it (SecantusDB, Redis, the catalog stand-in; logs under `tag`), stopped after."""
    log_dir = like.log_dir / tag
    servers = start_servers(log_dir)
    try:
        yield Bench(
            servers,
            like.docs,
            log_dir,
            like.rate_per_second,
            like.batch_size,
            read_ids=like.read_ids,
            say=like.say,
        )
    finally:
        servers.close()


def ceiling(bench: Bench, n: int) -> Row:
    """Raw unordered bulk_write of precomputed `$set`s: what the database absorbs on its own."""
    db = bench.fresh_db(n)
    ops = precomputed_updates([d["_id"] for d in bench.docs[:n]])
    cpu0 = cpu_seconds([bench.servers.mongo.pid])
    t0 = time.perf_counter()
    res = db[PRODUCTS].bulk_write(ops, ordered=False)
    seconds = time.perf_counter() - t0
    cpu = {"secantusdb": round(cpu_seconds([bench.servers.mongo.pid]) - cpu0, 2)}
    bench.drop(db)
    return Row(
        "ceiling", "ceiling: raw bulk_write", n, seconds, writes=res.modified_count, cpu_s=cpu
    )


def naive(bench: Bench, n: int, latency_ms: float) -> Row:
    """The loop a user would write: per product one GET and one update_one, in one process."""
    db = bench.fresh_db(n)
    bench.servers.set_latency(latency_ms)
    base = f"{bench.servers.catalog.url}/v1/products/"
    products = db[PRODUCTS]
    session = requests.Session()
    writes = 0
    cpu0 = cpu_seconds([bench.servers.mongo.pid])
    t0 = time.perf_counter()
    for doc in bench.docs[:n]:
        resp = session.get(base + str(doc["_id"]), timeout=HTTP_TIMEOUT_SECONDS)
        resp.raise_for_status()
        item = resp.json()
        fields = {k: item[k] for k in CATALOG_FIELDS}
        fields[SYNCED_AT_FIELD] = dt.datetime.now(dt.UTC)
        writes += products.update_one({"_id": doc["_id"]}, {"$set": fields}).modified_count
    seconds = time.perf_counter() - t0
    cpu = {"secantusdb": round(cpu_seconds([bench.servers.mongo.pid]) - cpu0, 2)}
    session.close()
    bench.drop(db)
    return Row(
        "naive",
        "naive loop",
        n,
        seconds,
        latency_ms=latency_ms,
        processes=1,
        writes=writes,
        catalog_requests=n,
        cpu_s=cpu,
    )


# What `system` runs after its first job: (db, broker, settings, job id, the job's row).
AfterFirst = Callable[[Database, Broker, Settings, str, "Row"], None]


@dataclass(frozen=True)
class SystemConfig:
    processes: int
    pool: str
    concurrency: int
    latency_ms: float

    @property
    def label(self) -> str:
        return f"{self.processes}x{self.pool}({self.concurrency})"


def _batch_timings(db: Database, job_id: str, log_paths: list[Path]) -> dict[str, float]:
    """Mean per-batch timings recorded by the workers (batch doc `timings`, log `after_s`)."""
    docs = list(db[METADATA].find({"kind": "batch", "job_id": job_id}, {"timings": 1}))
    out: dict[str, float] = {}
    for key in TIMING_KEYS:
        values = [float(d["timings"][key]) for d in docs if key in d.get("timings", {})]
        if values:
            out[key] = statistics.fmean(values)
    after: list[float] = []
    for path in log_paths:
        if path.exists():
            after += [float(m) for m in _DISPATCH_RE.findall(path.read_text(errors="replace"))]
    if after:
        out["after_s"] = statistics.fmean(after)
    return out


def _overhead_pct(t: dict[str, float]) -> float | None:
    """Share of a batch's time spent outside catalog calls and product reads/writes.

    `after_s` (dispatching the next batches) runs on the worker's after-batch thread once
    the slot is free, so it is not part of the batch's time; the phases table shows it.
    """
    if "total_s" not in t:
        return None
    total = t["total_s"]
    busy = t.get("source_s", 0.0) + t.get("read_s", 0.0) + t.get("write_s", 0.0)
    return 100.0 * max(0.0, total - busy) / total if total > 0 else None


def _run_job(
    bench: Bench,
    db: Database,
    broker: Broker,
    settings: Settings,
    cfg: SystemConfig,
    scenario: str,
    worker_pids: list[int],
    timeout: float | None = None,
    traffic_dir: Path | None = None,
    journal: bool = True,
    backfill: str = "catalog",
) -> tuple[Row, str]:
    n = db[PRODUCTS].estimated_document_count()
    slots = cfg.processes * cfg.concurrency
    opts = RunOptions(
        backfill=backfill,
        batch_size=bench.batch_size,
        max_in_flight=max(8, 2 * slots),
        rate_per_second=bench.rate_per_second,
        journal=journal,
    )
    cpu = CpuMeter(
        {
            "secantusdb": [bench.servers.mongo.pid],
            "workers": worker_pids,
            "catalog": [bench.servers.catalog.pid],
            "redis": [bench.servers.redis_proc.pid],
        },
    )
    definitions = worker_definitions(settings)  # what the workers know, loaded off the clock
    ops_before = bench.servers.mongo_ops()
    traffic = TrafficMeter(bench.servers.traffic, traffic_dir)
    traffic.start()
    busy_before = machine_busy()
    cpu.start()
    # The orchestrator is this thread (launch, plan, wait): not the bench's own samplers,
    # which run on other threads of this process.
    orchestrator0 = time.thread_time()
    calls_before = bench.servers.redis_calls()
    requests_before = bench.servers.catalog_requests()
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    job, _ = launch(db, broker, opts, definitions=definitions)
    job_id = str(job["_id"])
    summary = wait_for(db, broker, settings, job_id, timeout=timeout or max(300.0, n / 20))
    if summary.job["status"] != "completed":
        raise RuntimeError(f"{scenario} {cfg.label}: job ended {summary.job['status']}")
    finished = summary.job.get("finished_at")
    if finished is not None:
        seconds = (finished.replace(tzinfo=dt.UTC) - started).total_seconds()
    else:
        seconds = time.perf_counter() - t0
    cpu_used = cpu.stop()
    cpu_used["orchestrator"] = round(time.thread_time() - orchestrator0, 2)
    mongo_traffic = traffic.stop().as_dict()
    # Polls while the job runs, so it grows with the run's length rather than its batches.
    mongo_traffic["orchestrator_commands"] = traffic.own.commands
    calls = calls_delta(calls_before, bench.servers.redis_calls())
    busy_after = machine_busy()
    # minus the serverStatus that read the "before" counters
    ops = calls_delta(ops_before, bench.servers.mongo_ops())
    if ops.get("command"):
        ops["command"] -= 1
    total_cpu = busy_after[1] - busy_before[1]
    batches = int(summary.job["planning"]["batches"])
    row = Row(
        scenario,
        f"{'rerun ' if scenario == 'rerun' else ''}{cfg.label}",
        n,
        seconds,
        latency_ms=cfg.latency_ms,
        pool=cfg.pool,
        processes=cfg.processes,
        concurrency=cfg.concurrency,
        writes=int(summary.items["written"]),
        catalog_requests=bench.servers.catalog_requests() - requests_before,
        batches=batches,
        redis_cmds_per_batch=round(sum(calls.values()) / max(batches, 1), 1),
        redis_top=dict(list(calls.items())[:8]),
        cpu_s=cpu_used,
        mongo_cmds_per_batch=round(sum(ops.values()) / max(batches, 1), 1),
        mongo_top=ops,
        mongo_traffic=mongo_traffic,
        machine_busy_pct=(
            round(100 * (busy_after[0] - busy_before[0]) / total_cpu, 1) if total_cpu > 0 else None
        ),
    )
    return row, job_id


def system(
    bench: Bench,
    n: int,
    cfg: SystemConfig,
    *,
    rerun: bool,
    timeout: float | None = None,
    read_ids: int | None = None,
    journal: bool = True,
    after_first: AfterFirst | None = None,
    backfill: str = "catalog",
    client_bulk_write: bool = True,
) -> list[Row]:
    """The full system on `n` products with `cfg`'s workers; then optionally the same job again.

    `timeout` bounds each job's wait (seconds); past it the run fails instead of hanging.
    `read_ids` overrides the bench's BACKFILL_READ_IDS for this run. `journal=False` runs
    the job as `--no-journal`. `after_first(db, broker, settings, job_id, row)` runs once
    the first job is done, on the same workers and database (bench/journal_cost.py).
    `backfill` is the backfill run: `catalog`, or `catalog_local` (bench.local_catalog:
    the same backfill with the catalog's answers computed in the workers).
    `client_bulk_write=False` runs the workers with BACKFILL_CLIENT_BULK_WRITE=0: each
    sub-chunk's journal, updates and checkpoint as collection commands of their own.
    """
    db = bench.fresh_db(n)
    run_no = bench._runs
    bench.servers.set_latency(cfg.latency_ms)
    settings = Settings(
        mongo_url=bench.servers.mongo.url,
        mongo_db=db.name,
        redis_url=bench.servers.redis_proc.url,
        queue=f"bench-{run_no:03d}",
        batch_size=bench.batch_size,
        read_ids=bench.read_ids if read_ids is None else read_ids,
        rate_per_second=bench.rate_per_second,
        data_dir=str(bench.log_dir),
        migrations_dir=str(VERSIONS_DIR),  # the example scenario's
        imports=(local_catalog.MODULE,) if backfill == local_catalog.NAME else (),
        # The engine's own throughput is measured, as in earlier runs: the database health
        # throttle (on by default) would hold slots back once the one SecantusDB saturates.
        max_write_latency_ms=0,
        client_bulk_write=client_bulk_write,
    ).with_source_env(CATALOG_URL=bench.servers.catalog.url)
    runner.up(
        db, runner.RunnerConfig.from_settings(settings, log=lambda m: None), to=METADATA_VERSION
    )
    broker = Broker.from_settings(settings)
    traffic_dir = bench.log_dir / f"traffic-run{run_no:03d}"
    workers: list[ManagedProcess] = []
    rows: list[Row] = []
    try:
        for i in range(cfg.processes):
            workers.append(
                start_worker(
                    settings,
                    log_dir=bench.log_dir,
                    name=f"run{run_no:03d}-w{i}",
                    concurrency=cfg.concurrency,
                    pool=cfg.pool,
                    # each worker counts its MongoDB commands and bytes (bench.traffic)
                    extra_env={WORKER_ENV: str(traffic_dir)},
                    extra_argv=WORKER_ARGV,
                )
            )
        wait_workers_ready(broker.sender.control, cfg.processes, WORKER_READY_TIMEOUT)  # type: ignore[attr-defined]
        logs = [w.log_path for w in workers if w.log_path]
        pids = [w.pid for w in workers]
        with RssSampler(w.pid for w in workers) as rss:
            first, job_id = _run_job(
                bench,
                db,
                broker,
                settings,
                cfg,
                "system",
                pids,
                timeout,
                traffic_dir,
                journal,
                backfill,
            )
        first.timings = _batch_timings(db, job_id, logs)
        first.overhead_pct = _overhead_pct(first.timings)
        first.peak_rss_mb = round(rss.peak_mb, 1)
        enriched = db[PRODUCTS].count_documents({SYNCED_AT_FIELD: {"$exists": True}})
        if enriched != n:
            raise RuntimeError(f"{cfg.label}: {enriched} of {n} products enriched")
        rows.append(first)
        bench.say(_line(first))
        if after_first is not None:
            after_first(db, broker, settings, job_id, first)
        if rerun:
            for path in logs:  # later `after_s` lines belong to the rerun only
                path.write_text("")
            since = dt.datetime.now(dt.UTC)
            with RssSampler(w.pid for w in workers) as rss:
                again, job_id = _run_job(
                    bench, db, broker, settings, cfg, "rerun", pids, timeout, traffic_dir
                )
            again.timings = _batch_timings(db, job_id, logs)
            again.overhead_pct = _overhead_pct(again.timings)
            again.peak_rss_mb = round(rss.peak_mb, 1)
            # Independent of our own counters: no product got a newer sync stamp.
            again.writes = db[PRODUCTS].count_documents({SYNCED_AT_FIELD: {"$gte": since}})
            again.x_first_run = round(first.seconds / again.seconds, 2)
            rows.append(again)
            bench.say(_line(again))
    finally:
        for w in workers:
            w.stop()
        broker.redis.close()
        bench.drop(db)
    return rows


def _line(row: Row) -> str:
    extra = f" overhead {row.overhead_pct:.1f}%" if row.overhead_pct is not None else ""
    rss = f" rss {row.peak_rss_mb:.0f}MB" if row.peak_rss_mb else ""
    if row.cpu_s:
        rss += " cpu " + " ".join(f"{k}={v:.1f}" for k, v in row.cpu_s.items())
    return (
        f"  {row.label:<28} {row.latency_ms if row.latency_ms is not None else '-':>4} ms "
        f"{row.products:>7} products {row.seconds:8.2f}s {row.products_per_s:9.1f}/s "
        f"writes {row.writes}{extra}{rss}"
    )


def describe(row: Row) -> str:
    return _line(row)


def with_ratios(rows: list[Row]) -> list[Row]:
    """Fill xceiling and xnaive (same latency) on every row."""
    ceil = next((r for r in rows if r.scenario == "ceiling"), None)
    naive_by_latency = {r.latency_ms: r for r in rows if r.scenario == "naive"}
    out = []
    for r in rows:
        r = replace(r)
        base_ps = r.ceiling_ps or (ceil.products_per_s if ceil else None)
        if base_ps:
            r.x_ceiling = round(r.products_per_s / base_ps, 3)
        base = naive_by_latency.get(r.latency_ms)
        if base and base.products_per_s and r.scenario != "ceiling":
            r.x_naive = round(r.products_per_s / base.products_per_s, 1)
        out.append(r)
    return out
