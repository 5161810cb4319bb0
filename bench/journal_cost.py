"""The journal series: what the before-image journal costs, and how fast a revert runs.

On the same worker slots and products, each in a fresh database: the catalog backfill's
first run with the journal (the default) and with `--no-journal`, in the order on, off,
off, on, so neither side always runs first or last; in make bench each run on servers of
its own. After each journaled run, on the same workers: the journal's size per changed
document (the BSON the journal collection holds, divided by the documents the job wrote)
and `backfill revert` of the job, timed from its start to its `finished_at`, checked to
leave no catalog field behind.
Target: the journaled first run at most TARGET_SLOWDOWN slower than the one without.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Callable
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database

from backfill_engine.journal import JOURNAL
from backfill_engine.settings import Settings
from bench.scenarios import Bench, BenchFor, Row, SystemConfig, bench_on, system
from migrations.versions._catalog import CATALOG_FIELDS, PRODUCTS, SYNCED_AT_FIELD
from orchestrator import revert as revert_verbs
from orchestrator.commands import Broker, wait_for

TARGET_SLOWDOWN = 0.15  # the journal may cost at most this share of first-run throughput
ORDER = (True, False, False, True)  # journal on / off, alternating
DEFAULT_CONFIG = SystemConfig(processes=2, pool="prefork", concurrency=2, latency_ms=0.0)


def journal_bytes(db: Database) -> int:
    """The BSON bytes the journal collection holds (documents as stored, no indexes)."""
    raw = db.get_collection(JOURNAL, codec_options=CodecOptions(document_class=RawBSONDocument))
    return sum(len(doc.raw) for doc in raw.find({}))


def revert_and_measure(
    db: Database, broker: Broker, settings: Settings, job_id: str, row: Row
) -> dict[str, Any]:
    """Journal bytes per written document, then the job's revert on the running workers."""
    size = journal_bytes(db)
    started = dt.datetime.now(dt.UTC)
    job, _ = revert_verbs.revert(db, broker, settings, job_id)
    summary = wait_for(db, broker, settings, str(job["_id"]), timeout=max(300.0, row.products / 20))
    if summary.job["status"] != "completed":
        raise RuntimeError(f"revert of {job_id} ended {summary.job['status']}")
    finished = summary.job["finished_at"].replace(tzinfo=dt.UTC)
    seconds = (finished - started).total_seconds()
    left = db[PRODUCTS].count_documents(
        {"$or": [{f: {"$exists": True}} for f in (*CATALOG_FIELDS, SYNCED_AT_FIELD)]}
    )
    if left:
        raise RuntimeError(f"revert of {job_id} left catalog fields on {left} products")
    return {
        "written": row.writes,
        "journal_bytes": size,
        "bytes_per_doc": round(size / row.writes, 1) if row.writes else None,
        "revert_seconds": round(seconds, 2),
        "revert_docs_per_s": round(row.writes / seconds, 1) if seconds > 0 else None,
    }


def run_series(
    bench: Bench,
    n: int,
    cfg: SystemConfig = DEFAULT_CONFIG,
    say: Callable[[str], None] = print,
    order: tuple[bool, ...] = ORDER,
    *,
    bench_for: BenchFor | None = None,
) -> dict[str, Any]:
    """First runs with and without the journal; bytes and a revert after each journaled one.

    `bench_for(tag)` gives each run (its revert included) the servers it runs on
    (`scenarios.fresh_bench` in make bench); without it every run shares `bench`'s.
    """
    runs: list[dict[str, Any]] = []
    for k, journal in enumerate(order):
        measured: dict[str, Any] = {}

        def after(
            db: Database,
            broker: Broker,
            settings: Settings,
            job_id: str,
            row: Row,
            into: dict[str, Any] = measured,
        ) -> None:
            into.update(revert_and_measure(db, broker, settings, job_id, row))

        say(f"journal {'on' if journal else 'off'}: {cfg.label} at {cfg.latency_ms:g} ms")
        tag = f"journal-{k}-{'on' if journal else 'off'}"
        with bench_on(bench, bench_for, tag) as here:
            (row,) = system(
                here, n, cfg, rerun=False, journal=journal, after_first=after if journal else None
            )
        runs.append({"journal": journal, "products_per_s": row.products_per_s, **measured})
        if journal:
            say(
                f"  journal {measured['bytes_per_doc']} bytes/doc; revert "
                f"{measured['revert_docs_per_s']}/s"
            )
    return summarize(runs, n, cfg)


def summarize(runs: list[dict[str, Any]], n: int, cfg: SystemConfig) -> dict[str, Any]:
    """Medians of each side, the slowdown and whether it meets TARGET_SLOWDOWN."""
    on = [r for r in runs if r["journal"]]
    off = [r for r in runs if not r["journal"]]
    rate_on = statistics.median(r["products_per_s"] for r in on) if on else None
    rate_off = statistics.median(r["products_per_s"] for r in off) if off else None
    slowdown = round(1 - rate_on / rate_off, 3) if rate_on and rate_off else None

    def median_of(key: str) -> float | None:
        values = [r[key] for r in on if r.get(key) is not None]
        return round(statistics.median(values), 1) if values else None

    return {
        "products": n,
        "config": cfg.label,
        "latency_ms": cfg.latency_ms,
        "runs": runs,
        "with_journal_per_s": rate_on,
        "without_journal_per_s": rate_off,
        "slowdown": slowdown,
        "target_slowdown": TARGET_SLOWDOWN,
        "met": None if slowdown is None else slowdown <= TARGET_SLOWDOWN,
        "bytes_per_doc": median_of("bytes_per_doc"),
        "revert_docs_per_s": median_of("revert_docs_per_s"),
    }
