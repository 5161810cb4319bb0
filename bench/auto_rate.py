"""The `--rate auto` series: does the controller find an API's rate that nobody told it?

A catalog stand-in of its own answers 429 above LIMIT requests/s, counted by each of the
limiter schemes APIs use (`--rate-limit-scheme`: a token bucket, a fixed or a sliding
one-second window; catalog_service/limiters.py). Per scheme, a job with `--rate auto`
starts ten times too high, then ten times too low; each runs RUN_SECONDS from the moment
its workers are ready. The stand-in's own counters (/_stats) over [SETTLE_SECONDS,
RUN_SECONDS] give the sustained rate of good answers and the share answered 429.
Target: >= TARGET_SHARE x LIMIT with <= TARGET_429_SHARE answered 429, within 60 s.

Each job runs on a SecantusDB started for it: the series measures the controller, and a
server that has taken the jobs before it measured batches 4x slower at the same moment of
its fourth job in two runs, with no 429 (docs/benchmarks.md, Targets).

`python -m bench.auto_rate [SCHEME ...]` runs only this series (every scheme by default)
and rewrites its part of the doc.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pymongo
import requests

from backfill_engine.settings import Settings
from backfill_migrations import runner
from bench import report
from bench.data import product_docs, seed
from bench.servers import MONGO_DATA, wait_workers_ready
from catalog_service.limiters import DEFAULT_SCHEME, SCHEMES
from catalog_service.scenario import start_catalog
from migrations import VERSIONS_DIR
from orchestrator import jobs
from orchestrator.commands import Broker, RunOptions, launch
from orchestrator.stack import ManagedProcess, start_mongo, start_redis, start_worker

LIMIT = 20.0  # the stand-in's requests/s (`--rate-limit`); never told to the job
STARTS = (10 * LIMIT, LIMIT / 10)  # ten times too high, ten times too low
RUN_SECONDS = 60.0  # per start, from the workers being ready
SETTLE_SECONDS = 20.0  # measured from here to RUN_SECONDS: converged within this
TARGET_SHARE = 0.9
TARGET_429_SHARE = 0.01
UNTESTED = "untested: workers below the limit"  # no 429 in the whole run
# 10 ids per request: 20/s is 200 products/s, which SecantusDB absorbs (4 slots did ~28
# requests/s here): the API, not the database, binds.
SUBCHUNK = 10
PROCESSES, CONCURRENCY = 2, 2
PRODUCTS = 15_000  # more than RUN_SECONDS x LIMIT x SUBCHUNK: the job outlasts the run
METADATA_VERSION = "20240405_create_backfill_metadata"
BEGIN = "<!-- bench:auto-rate:begin (written by `make bench` or `python -m bench.auto_rate`) -->"
END = "<!-- bench:auto-rate:end -->"


def _stats(catalog: ManagedProcess) -> dict[str, Any]:
    resp = requests.get(f"{catalog.url}/_stats", params={"id_counts": "0"}, timeout=10)
    resp.raise_for_status()
    result: dict[str, Any] = resp.json()
    return result


def one_start(
    mongo_url: str,
    redis_url: str,
    log_dir: Path,
    start: float,
    run_no: int,
    say: Callable[[str], None] = print,
    scheme: str = DEFAULT_SCHEME,
) -> dict[str, Any]:
    """One job starting at `start` requests/s against a stand-in limited to LIMIT by `scheme`."""
    args = ["--rate-limit", f"{LIMIT:g}", "--rate-limit-scheme", scheme]
    catalog = start_catalog(log_dir=log_dir, extra_args=args)
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=10_000)
    db = client[f"bench_auto_{run_no}"]
    client.drop_database(db.name)
    workers: list[ManagedProcess] = []
    try:
        seed(db, product_docs(PRODUCTS))
        settings = Settings(
            mongo_url=mongo_url,
            mongo_db=db.name,
            redis_url=redis_url,
            queue=f"bench-auto-{run_no}",
            subchunk_size=SUBCHUNK,
            rate_per_second=start,
            data_dir=str(log_dir),
            migrations_dir=str(VERSIONS_DIR),  # the example scenario's
            # The controller against the API's limiter is measured, as the throughput series
            # measure the engine: the database health throttle (on by default, tested in
            # tests/faults/test_db_health.py) held every slot for 10 s of one run's 40 s
            # window when the embedded server's write p95 passed 500 ms (docs/benchmarks.md).
            max_write_latency_ms=0,
        ).with_source_env(CATALOG_URL=catalog.url)
        runner.up(
            db, runner.RunnerConfig.from_settings(settings, log=lambda m: None), to=METADATA_VERSION
        )
        broker = Broker.from_settings(settings)
        opts = RunOptions(
            backfill="catalog",
            batch_size=100,
            max_in_flight=8,
            rate_per_second=start,
            rate_auto=True,
        )
        job, _ = launch(db, broker, opts)  # planned before any worker starts
        for i in range(PROCESSES):
            workers.append(
                start_worker(
                    settings, log_dir=log_dir, name=f"auto{run_no}-w{i}", concurrency=CONCURRENCY
                )
            )
        wait_workers_ready(broker.sender.control, PROCESSES, 60.0)  # type: ignore[attr-defined]
        requests.post(f"{catalog.url}/_stats/reset", timeout=10).raise_for_status()
        t0 = time.monotonic()
        time.sleep(SETTLE_SECONDS)
        settled = _stats(catalog)
        time.sleep(RUN_SECONDS - SETTLE_SECONDS)
        end = _stats(catalog)
        seconds = time.monotonic() - t0 - SETTLE_SECONDS
        job = jobs.get_job(db, str(job["_id"]))
        jobs.cancel(db, str(job["_id"]))
    finally:
        for w in workers:
            w.stop()
        catalog.stop()
        client.drop_database(db.name)
        client.close()
    row = measure(start, settled, end, seconds, job.get("rate_auto") or {}, scheme)
    say(
        f"  {scheme} auto from {start:g}/s: {row['ok_per_s']:.1f}/s ok "
        f"({row['x_limit']:.2f} x {LIMIT:g}), "
        f"429 {row['share_429'] * 100:.2f} %, controller at {row['final_rate']:.1f}/s "
        f"({row['reason']}), at most {row['max_rate_1s']} requests in 1 s: {row['verdict']}"
    )
    return row


def measure(
    start: float,
    settled: dict[str, Any],
    end: dict[str, Any],
    seconds: float,
    auto: dict[str, Any],
    scheme: str = DEFAULT_SCHEME,
) -> dict[str, Any]:
    """The window's numbers from two /_stats snapshots (pure)."""

    def count(stats: dict[str, Any], status: str) -> int:
        return int(stats["by_status"].get(status, 0))

    ok = count(end, "200") - count(settled, "200")
    throttled = count(end, "429") - count(settled, "429")
    answered = int(end["requests"]) - int(settled["requests"])
    ok_per_s = ok / seconds if seconds > 0 else 0.0
    share = throttled / answered if answered else 0.0
    met = ok_per_s >= TARGET_SHARE * LIMIT and share <= TARGET_429_SHARE
    # `end` counts from the workers being ready: no 429 in all that time means the workers
    # never sent more than the limit (a busy shared host), so the controller had nothing to
    # find and the run says nothing about it.
    never_pushed_back = count(end, "429") == 0
    return {
        "scheme": scheme,
        "start_per_s": start,
        "limit_per_s": LIMIT,
        "window_s": [SETTLE_SECONDS, RUN_SECONDS],
        "ok_per_s": round(ok_per_s, 2),
        "x_limit": round(ok_per_s / LIMIT, 3),
        "requests": answered,
        "answered_429": throttled,
        "share_429": round(share, 4),
        "final_rate": float(auto.get("current") or 0.0),
        "reason": str(auto.get("reason", "")),
        "answered_429_run": count(end, "429"),
        "max_rate_1s": int(end.get("max_rate_1s", 0)),
        "met": met,
        "verdict": "met" if met else UNTESTED if never_pushed_back else "missed",
    }


def run_all(
    mongo_url: str | Callable[[int], AbstractContextManager[str]],
    redis_url: str,
    log_dir: Path,
    say: Callable[[str], None] = print,
    schemes: tuple[str, ...] = SCHEMES,
) -> list[dict[str, Any]]:
    """Both starts against each scheme, one fresh stand-in (and database) per job.

    `mongo_url` is one server for every job, or gives each job (by its number) a server
    of its own for as long as the job runs.
    """
    say(f"--rate auto against a stand-in limited to {LIMIT:g}/s ({', '.join(schemes)})")
    rows: list[dict[str, Any]] = []
    for scheme in schemes:
        for start in STARTS:
            run_no = len(rows)
            with _server_for(mongo_url, run_no) as url:
                rows.append(one_start(url, redis_url, log_dir, start, run_no, say, scheme))
    return rows


@contextmanager
def _server_for(
    mongo_url: str | Callable[[int], AbstractContextManager[str]], run_no: int
) -> Iterator[str]:
    if isinstance(mongo_url, str):
        yield mongo_url
    else:
        with mongo_url(run_no) as url:
            yield url


def setup() -> dict[str, Any]:
    """What every job of the series ran with, for the doc."""
    return {
        "limit_per_s": LIMIT,
        "processes": PROCESSES,
        "concurrency": CONCURRENCY,
        "ids_per_request": SUBCHUNK,
        "window_s": [SETTLE_SECONDS, RUN_SECONDS],
        "target_share": TARGET_SHARE,
        "target_429_share": TARGET_429_SHARE,
    }


def write_section(doc: Path, rows: list[dict[str, Any]]) -> None:
    """Replace the series' section in `doc` (or append it) without touching anything else."""
    block = BEGIN + "\n\n" + report.auto_rate_schemes_section(rows, setup()) + "\n\n" + END
    report.write_between(doc, BEGIN, END, block)


def run_on_fresh_servers(
    log_dir: Path, say: Callable[[str], None] = print, schemes: tuple[str, ...] = SCHEMES
) -> list[dict[str, Any]]:
    """`run_all` with a SecantusDB of its own for every job (and one Redis of its own for
    the series), so no job depends on what ran before it: after `make bench`'s matrix and
    scaling series the shared server let a job send half the requests/s a fresh one did,
    and within the series the fourth job on one server measured its batches slowing
    4x at the same moment twice (docs/benchmarks.md, Targets)."""
    rds = start_redis(log_dir=log_dir)
    try:
        return run_all(partial(fresh_mongo, log_dir), rds.url, log_dir, say, schemes)
    finally:
        rds.stop()


@contextmanager
def fresh_mongo(log_dir: Path, run_no: int) -> Iterator[str]:
    """A SecantusDB started for one job, its data on disk under `log_dir`, removed after."""
    data = log_dir / f"{MONGO_DATA}-auto{run_no}"
    mongo, _ = start_mongo(data, log_dir=log_dir)
    try:
        yield mongo.url
    finally:
        mongo.stop()
        shutil.rmtree(data, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import datetime as dt
    import sys

    schemes = tuple(sys.argv[1:] if argv is None else argv) or SCHEMES
    unknown = [x for x in schemes if x not in SCHEMES]
    if unknown:
        print(f"error: unknown scheme {unknown[0]!r}; known: {', '.join(SCHEMES)}", file=sys.stderr)
        return 2
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%S")
    rows = run_on_fresh_servers(Path(".backfill/bench") / f"auto-{stamp}", schemes=schemes)
    write_section(Path("docs/benchmarks.md"), rows)
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
