"""`backfill demo` (what `make demo` runs): the whole system on one machine, end to end."""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, replace

from pymongo.database import Database
from rich.console import Console
from rich.table import Table

from backfill_engine.settings import Settings
from backfill_engine.states import METADATA, JobStatus
from backfill_engine.store import now_utc
from orchestrator.backfill_runs import run_backfill
from orchestrator.context import AppContext, connect_mongo
from orchestrator.jobs import JobSummary, summarize
from orchestrator.local_flower import start_local_flower
from orchestrator.scenario import LocalScenario, load_scenario
from orchestrator.stack import start_worker

console = Console(soft_wrap=True)
DEMO_LOCK_SECONDS = 1800.0  # the migration lock's lease on the embedded server
# Documents a first `make demo` seeds: enough for every phase to show its rate, few enough
# that a fresh clone's first run ends in minutes (README); `--seed 100000` is the scale run.
DEFAULT_SEED = 20_000


def watch_hint(backfill: str) -> str:
    """How to keep a stack running and watch a backfill live (the demo's servers stop when
    it ends, so its summary names no URL)."""
    return (
        "Watch a run live: `backfill up` in one terminal (keeps MongoDB, Redis, the API\n"
        "stand-ins, workers, Flower and metrics running until Ctrl-C), then in another\n"
        f"terminal `backfill run {backfill}` and `backfill status JOB --watch`."
    )


@dataclass(frozen=True)
class DemoOptions:
    seed: int = DEFAULT_SEED  # documents in the scenario's collection
    workers: int = 2
    concurrency: int = 2
    latency_ms: int = 10
    flower: bool = True


def _summary_table(rows: list[tuple[str, str]]) -> Table:
    table = Table(title="mongo-backfill demo", show_header=False)
    for k, v in rows:
        table.add_row(k, v)
    return table


def jobs_since(db: Database, since: dt.datetime) -> list[JobSummary]:
    """Every backfill job created at or after `since` (the server's clock), oldest first."""
    found = db[METADATA].find({"kind": "job", "created_at": {"$gte": since}}, {"_id": 1})
    return [summarize(db, str(j["_id"])) for j in found.sort([("created_at", 1), ("_id", 1)])]


def backfills_run_before(db: Database) -> list[str]:
    """The backfills completed jobs ran (reverts aside), in the order each first ran.

    What a demo re-runs once every migration is applied: documents it seeded since then
    (`--seed` larger than before) get each backfill the migrations gave the others.
    """
    done = db[METADATA].find(
        {"kind": "job", "status": JobStatus.COMPLETED.value, "reverts": {"$exists": False}},
        {"backfill": 1},
    )
    names: list[str] = []
    for job in done.sort([("created_at", 1), ("_id", 1)]):
        if job.get("backfill") and job["backfill"] not in names:
            names.append(job["backfill"])
    return names


def job_seconds(summary: JobSummary) -> float | None:
    """From the job's creation to its finish, or None while it has not finished."""
    job = summary.job
    if not (job.get("finished_at") and job.get("created_at")):
        return None
    return float((job["finished_at"] - job["created_at"]).total_seconds())


def jobs_table(summaries: list[JobSummary]) -> Table:
    """One row per backfill job: what it walked, wrote and held back, and how fast."""
    table = Table(title="backfill jobs of this run")
    # The backfill's name, not the job id: the id is long and the run's log names it.
    for name in ("backfill", "documents", "written", "quarantined", "seconds", "documents/s"):
        table.add_column(name, justify="left" if name == "backfill" else "right")
    for x in summaries:
        seconds = job_seconds(x)
        rate = "" if not seconds else f"{x.items['processed'] / seconds:,.0f}"
        table.add_row(
            str(x.job.get("backfill") or x.job["_id"]),
            f"{x.items['processed']:,}",
            f"{x.items['written']:,}",
            f"{x.quarantined:,}",
            "" if seconds is None else f"{seconds:,.1f}",
            rate,
        )
    return table


def run_demo(app: AppContext, opts: DemoOptions) -> None:
    """Start everything, seed, migrate (the backfill included), summarize, stop everything."""
    from backfill_migrations import runner

    started = time.monotonic()
    scenario: LocalScenario = load_scenario(os.environ)
    embedded = app.settings.mongo_url is None  # app.stack() fills it in
    stack = app.stack()
    s: Settings = stack.settings
    if scenario.migrations_dir is not None:
        # The scenario's migrations, for this runner and the workers started below.
        s = replace(s, migrations_dir=str(scenario.migrations_dir))
    if embedded:
        # The embedded server answers no client while it builds an index (docs/benchmarks.md):
        # the demo's only migration runner must not lose its lock to that.
        s = replace(s, migration_lock_seconds=max(s.migration_lock_seconds, DEMO_LOCK_SECONDS))
    for note in stack.notes:
        console.print(f"[yellow]{note}[/]")
    log_dir = stack.log_dir
    urls, stand_ins = scenario.start_stand_ins(s.source_env, log_dir, opts.latency_ms)
    for proc in stand_ins:
        stack.add(proc)
    s = s.with_source_env(**urls)
    if opts.flower:
        flower, auth_where = start_local_flower(s, log_dir=log_dir)
        stack.add(flower)
        # Shown now, while it is served: the summary comes after the demo's servers stop.
        console.print(
            f"Flower {flower.url} while the demo runs (user and password in {auth_where})"
        )
    app.settings = s
    stack.settings = s
    for i in range(opts.workers):
        stack.add(
            start_worker(s, log_dir=log_dir, name=f"worker-{i + 1}", concurrency=opts.concurrency)
        )
    apis = " · ".join(
        f"{x.label} {s.source_env.get(x.url_env)} (+{opts.latency_ms} ms)"
        for x in scenario.stand_ins
    )
    console.print(
        f"stack: MongoDB {s.mongo_url} · Redis {s.redis_url} · {apis} · "
        f"{opts.workers} workers x {opts.concurrency}"
    )
    db = connect_mongo(s)
    docs = db[scenario.collection]
    added = scenario.seed(db, opts.seed)
    console.print(
        f"{scenario.collection}: {docs.estimated_document_count():,} ({added:,} seeded now)"
    )

    def capture(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    run_started = now_utc()
    result = runner.up(db, runner.RunnerConfig.from_settings(s, log=capture))
    applied = [step.version for step in result.done]
    if not applied:
        again = backfills_run_before(db) or [scenario.backfill]
        why = (
            f"to bring the {added:,} new documents up to date"
            if added
            else "to show that a rerun writes nothing"
        )
        console.print(f"all migrations already applied; re-running {', '.join(again)} {why}")
        for name in again:
            run_backfill(db, name, settings=s, log=capture)
    rows: list[tuple[str, str]] = [
        ("migrations applied now", ", ".join(applied) or "none (all applied before)")
    ]
    synced = docs.count_documents({scenario.synced_field: {"$exists": True}})
    rows.append(
        (f"{scenario.collection} backfilled", f"{synced:,} of {docs.estimated_document_count():,}")
    )
    summaries = jobs_since(db, run_started)
    if summaries and all(x.items["written"] == 0 for x in summaries):
        rows.append(("note", "nothing written: every document already matched its source"))
    rows.append(("total seconds", f"{time.monotonic() - started:,.1f}"))
    console.print(_summary_table(rows))
    if summaries:
        console.print(jobs_table(summaries))
    console.print(watch_hint(scenario.backfill))
