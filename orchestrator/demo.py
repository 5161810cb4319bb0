"""`backfill demo` (what `make demo` runs): the whole system on one machine, end to end."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bson.objectid import ObjectId
from pymongo.database import Database
from rich.console import Console
from rich.table import Table

from backfill_engine.settings import Settings
from migrations.versions._catalog import PRODUCTS
from orchestrator.backfill_runs import run_backfill
from orchestrator.context import AppContext, connect_mongo
from orchestrator.jobs import JobSummary, list_jobs, summarize
from orchestrator.local_flower import start_local_flower
from orchestrator.stack import start_catalog, start_worker

SEED_CHUNK = 5000
# The demo's servers stop when it ends, so it names no URL in its summary; it says
# how to keep a stack running and watch a backfill live instead.
WATCH_HINT = (
    "Watch a run live: `backfill up` in one terminal (keeps MongoDB, Redis, the catalog,\n"
    "workers, Flower and metrics running until Ctrl-C), then in another terminal\n"
    "`backfill run catalog` and `backfill status JOB --watch`."
)
console = Console(soft_wrap=True)


@dataclass(frozen=True)
class DemoOptions:
    products: int = 100_000
    workers: int = 2
    concurrency: int = 2
    latency_ms: int = 10
    flower: bool = True


def seed_products(db: Database, target: int) -> int:
    """Insert catalog-less products (ObjectId ids) up to `target`; return how many were added."""
    products = db[PRODUCTS]
    have = products.estimated_document_count()
    added = 0
    while have + added < target:
        n = min(SEED_CHUNK, target - have - added)
        docs = [
            {
                "_id": ObjectId(),
                "sku": f"SKU-{have + added + i:08d}",
                "name": f"Product {have + added + i}",
                "price_cents": 100 + (have + added + i) % 9900,
            }
            for i in range(n)
        ]
        products.insert_many(docs, ordered=False)
        added += n
    return added


def _summary_table(rows: list[tuple[str, str]]) -> Table:
    table = Table(title="mongo-backfill demo", show_header=False)
    for k, v in rows:
        table.add_row(k, v)
    return table


def run_demo(app: AppContext, opts: DemoOptions) -> None:
    """Start everything, seed, migrate (the backfill included), summarize, stop everything."""
    from migrations import runner

    started = time.monotonic()
    stack = app.stack()
    s: Settings = stack.settings
    for note in stack.notes:
        console.print(f"[yellow]{note}[/]")
    log_dir = stack.log_dir
    if s.source_env.get("CATALOG_URL") is None:
        catalog = stack.add(
            start_catalog(log_dir=log_dir, extra_args=["--latency-ms", str(opts.latency_ms)])
        )
        s = s.with_source_env(CATALOG_URL=catalog.url)
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
    console.print(
        f"stack: MongoDB {s.mongo_url} · Redis {s.redis_url} · "
        f"catalog {s.source_env.get('CATALOG_URL')} "
        f"(+{opts.latency_ms} ms) · {opts.workers} workers x {opts.concurrency}"
    )
    db = connect_mongo(s)
    added = seed_products(db, opts.products)
    console.print(f"products: {db[PRODUCTS].estimated_document_count():,} ({added:,} seeded now)")

    summaries: list[JobSummary] = []

    def capture(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    t0 = time.monotonic()
    result = runner.up(db, runner.RunnerConfig.from_settings(s, log=capture))
    applied = [step.version for step in result.done]
    if not applied:
        console.print(
            "all migrations already applied; re-running the catalog backfill "
            "to show that a rerun writes nothing"
        )
        summaries.append(run_backfill(db, "catalog", settings=s, log=capture))
    seconds = time.monotonic() - t0
    if not summaries:
        latest = list_jobs(db, 1)
        if latest:
            summaries.append(summarize(db, str(latest[0]["_id"])))
    rows: list[tuple[str, str]] = [
        ("migrations applied now", ", ".join(applied) or "none (all applied before)")
    ]
    enriched = db[PRODUCTS].count_documents({"catalog_synced_at": {"$exists": True}})
    rows.append(
        ("products enriched", f"{enriched:,} of {db[PRODUCTS].estimated_document_count():,}")
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
            ("products/s", f"{items['processed'] / max(seconds, 1e-9):,.0f}"),
        ]
        if items["written"] == 0:
            rows.append(
                ("note", "nothing written to products: every product already matched the catalog")
            )
    rows.append(("total seconds", f"{time.monotonic() - started:,.1f}"))
    console.print(_summary_table(rows))
    console.print(WATCH_HINT)
