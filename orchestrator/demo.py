"""`backfill demo` (what `make demo` runs): the whole system on one machine, end to end."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from backfill_engine.settings import Settings
from orchestrator.backfill_runs import run_backfill
from orchestrator.context import AppContext, connect_mongo
from orchestrator.jobs import JobSummary, list_jobs, summarize
from orchestrator.local_flower import start_local_flower
from orchestrator.scenario import LocalScenario, load_scenario
from orchestrator.stack import start_worker

console = Console(soft_wrap=True)
DEMO_LOCK_SECONDS = 1800.0  # the migration lock's lease on the embedded server


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
    seed: int = 100_000  # documents in the scenario's collection
    workers: int = 2
    concurrency: int = 2
    latency_ms: int = 10
    flower: bool = True


def _summary_table(rows: list[tuple[str, str]]) -> Table:
    table = Table(title="mongo-backfill demo", show_header=False)
    for k, v in rows:
        table.add_row(k, v)
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

    summaries: list[JobSummary] = []

    def capture(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    t0 = time.monotonic()
    result = runner.up(db, runner.RunnerConfig.from_settings(s, log=capture))
    applied = [step.version for step in result.done]
    if not applied:
        console.print(
            f"all migrations already applied; re-running the {scenario.backfill} backfill "
            "to show that a rerun writes nothing"
        )
        summaries.append(run_backfill(db, scenario.backfill, settings=s, log=capture))
    seconds = time.monotonic() - t0
    if not summaries:
        latest = list_jobs(db, 1)
        if latest:
            summaries.append(summarize(db, str(latest[0]["_id"])))
    rows: list[tuple[str, str]] = [
        ("migrations applied now", ", ".join(applied) or "none (all applied before)")
    ]
    synced = docs.count_documents({scenario.synced_field: {"$exists": True}})
    rows.append(
        (f"{scenario.collection} backfilled", f"{synced:,} of {docs.estimated_document_count():,}")
    )
    if summaries:
        items: dict[str, Any] = summaries[-1].items
        q = summaries[-1].quarantined
        job = summaries[-1].job
        if job.get("finished_at") and job.get("created_at"):
            seconds = (job["finished_at"] - job["created_at"]).total_seconds()
        rows += [
            ("job", str(summaries[-1].job["_id"])),
            ("written", f"{items['written']:,}"),
            ("unchanged", f"{items['unchanged']:,}"),
            ("missing", f"{items['missing']:,}"),
            ("quarantined", f"{q:,}"),
            ("backfill seconds", f"{seconds:,.1f}"),
            ("documents/s", f"{items['processed'] / max(seconds, 1e-9):,.0f}"),
        ]
        if items["written"] == 0:
            rows.append(("note", "nothing written: every document already matched its source"))
    rows.append(("total seconds", f"{time.monotonic() - started:,.1f}"))
    console.print(_summary_table(rows))
    console.print(watch_hint(scenario.backfill))
