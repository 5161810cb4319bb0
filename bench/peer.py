"""The peer series: the engine next to the Celery `group` a team would write instead.

Per catalog latency, on the same worker slots (processes x concurrency, prefork) and the
same products: the engine's catalog backfill (`scenarios.system`, first run only) and
the peer (bench/peer_app.py), each run on servers of its own (make bench), twice per
side in mirrored order (engine, peer, peer, engine; the other way round at the next
latency), the mean of each side's runs compared. Both are timed from
the first look at the products (planning, or listing the ids) to the last write done.
Target: engine/peer throughput >= TARGET_RATIO at every latency.

Where the difference goes: both record per-batch phases (the engine in each batch
document, the peer in each task's result), and `slot_busy` says how much of the slots'
wall time went to batches at all (the rest: dispatch, acks, waiting for work).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from celery import group

from bench import peer_app
from bench.probes import CpuMeter, calls_delta
from bench.scenarios import Bench, BenchFor, Row, SystemConfig, bench_on, ceiling, system
from bench.servers import wait_workers_ready
from migrations.versions._catalog import PRODUCTS, SYNCED_AT_FIELD
from orchestrator.stack import ManagedProcess, spawn

DEFAULT_PEER_LATENCIES_MS = (0.0, 150.0)
DEFAULT_PEER_PROCESSES = 2
TARGET_RATIO = 0.9
# Runs per side and latency, in mirrored pairs (engine, peer, peer, engine): over four
# make bench runs with one run each the 0 ms ratio moved between 0.58 and 0.95.
DEFAULT_RUNS_EACH = 2
IDS_PER_TASK = 500  # what a team picks, and the engine's batch size in the bench
WORKER_READY_TIMEOUT = 90.0
PHASE_KEYS = ("lease_s", "read_s", "source_s", "write_s", "checkpoint_s", "total_s")
ENGINE, PEER = "engine", "peer"
# The engine once more at these latencies with BACKFILL_CLIENT_BULK_WRITE=0 (each
# sub-chunk's journal, updates and checkpoint as collection commands of their own): how
# much of the gap is what the server charges for one client bulkWrite against the
# peer's collection bulk_write. 0 ms only: at 150 ms the batches wait on the catalog.
SEPARATE = "separate"
DEFAULT_SEPARATE_WRITES_LATENCIES_MS = (0.0,)


def start_peer_worker(
    settings: peer_app.PeerSettings, *, log_dir: Path, name: str, concurrency: int, queue: str
) -> ManagedProcess:
    """One `celery -A bench.peer_app worker` process, prefork, on `queue`."""
    argv = [sys.executable, "-m", "celery", "-A", "bench.peer_app", "worker"]
    argv += ["--loglevel", "INFO", "--concurrency", str(concurrency), "--pool", "prefork"]
    argv += ["--hostname", f"{name}@%h", "--queues", queue]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return spawn(name, argv, log_dir / f"{name}.log", env=settings.to_env())


def peer_run(bench: Bench, n: int, cfg: SystemConfig, timeout: float | None = None) -> Row:
    """The peer on `n` fresh products with `cfg`'s slots; one row like a system row."""
    db = bench.fresh_db(n)
    run_no = bench._runs
    bench.servers.set_latency(cfg.latency_ms)
    redis_url = bench.servers.redis_proc.url or ""
    settings = peer_app.PeerSettings(
        mongo_url=bench.servers.mongo.url or "",
        mongo_db=db.name,
        catalog_url=bench.servers.catalog.url or "",
        broker_url=redis_url,
        read_ids=bench.read_ids,
    )
    queue = f"peer-{run_no:03d}"
    app = peer_app.create_app(redis_url)
    workers: list[ManagedProcess] = []
    try:
        for i in range(cfg.processes):
            name = f"peer{run_no:03d}-w{i}"
            workers.append(
                start_peer_worker(
                    settings,
                    log_dir=bench.log_dir,
                    name=name,
                    concurrency=cfg.concurrency,
                    queue=queue,
                )
            )
        wait_workers_ready(app.control, cfg.processes, WORKER_READY_TIMEOUT, "peer workers")
        cpu = CpuMeter(
            {
                "secantusdb": [bench.servers.mongo.pid],
                "workers": [w.pid for w in workers],
                "catalog": [bench.servers.catalog.pid],
                "redis": [bench.servers.redis_proc.pid],
            }
        )
        ops_before = bench.servers.mongo_ops()
        calls_before = bench.servers.redis_calls()
        requests_before = bench.servers.catalog_requests()
        cpu.start()
        orchestrator0 = time.thread_time()
        t0 = time.perf_counter()
        ids = [str(d["_id"]) for d in db[PRODUCTS].find({}, {"_id": 1}).sort("_id", 1)]
        tasks = [
            app.signature(peer_app.TASK_NAME, args=(ids[i : i + IDS_PER_TASK],), queue=queue)
            for i in range(0, len(ids), IDS_PER_TASK)
        ]
        results: list[dict[str, Any]] = (
            group(tasks).apply_async().get(timeout=timeout or max(300.0, n / 20), interval=0.05)
        )
        seconds = time.perf_counter() - t0
        cpu_used = cpu.stop()
        cpu_used["orchestrator"] = round(time.thread_time() - orchestrator0, 2)
        calls = calls_delta(calls_before, bench.servers.redis_calls())
        ops = calls_delta(ops_before, bench.servers.mongo_ops())
        if ops.get("command"):
            ops["command"] -= 1  # the serverStatus that read the "before" counters
        enriched = db[PRODUCTS].count_documents({SYNCED_AT_FIELD: {"$exists": True}})
        if enriched != n:
            raise RuntimeError(f"peer {cfg.label}: {enriched} of {n} products enriched")
        batches = len(tasks)
        return Row(
            "peer",
            f"peer {cfg.label}",
            n,
            seconds,
            latency_ms=cfg.latency_ms,
            pool=cfg.pool,
            processes=cfg.processes,
            concurrency=cfg.concurrency,
            writes=sum(int(r["written"]) for r in results),
            catalog_requests=bench.servers.catalog_requests() - requests_before,
            batches=batches,
            redis_cmds_per_batch=round(sum(calls.values()) / max(batches, 1), 1),
            redis_top=dict(list(calls.items())[:8]),
            timings={k: statistics.fmean(float(r[k]) for r in results) for k in PHASE_KEYS[1:4]}
            | {"total_s": statistics.fmean(float(r["total_s"]) for r in results)},
            cpu_s=cpu_used,
            mongo_cmds_per_batch=round(sum(ops.values()) / max(batches, 1), 1),
            mongo_top=ops,
        )
    finally:
        for w in workers:
            w.stop()
        app.close()
        bench.drop(db)


def slot_busy(row: Row) -> float | None:
    """Share of the slots' wall time spent inside batches (mean batch time x batches)."""
    total = row.timings.get("total_s")
    if total is None or not row.batches or not row.slots or row.seconds <= 0:
        return None
    return round(total * row.batches / (row.seconds * row.slots), 3)


def _phase(rows: Sequence[Row], key: str) -> float | None:
    found = [r.timings[key] for r in rows if key in r.timings]
    return round(1000 * statistics.fmean(found), 2) if found else None


def _busy(rows: Sequence[Row]) -> float | None:
    found = [b for b in map(slot_busy, rows) if b is not None]
    return round(statistics.fmean(found), 3) if found else None


def _db_ms(rows: Sequence[Row]) -> float | None:
    found = [ms for ms in (r.db_ms_per_product for r in rows) if ms is not None]
    return round(statistics.fmean(found), 4) if found else None


def _separate(rows: Sequence[Row], peer_ps: float) -> dict[str, Any]:
    """The engine with BACKFILL_CLIENT_BULK_WRITE=0 at one latency, against the same peer."""
    ps = statistics.fmean(r.products_per_s for r in rows)
    return {
        "engine_ps": round(ps, 1),
        "ratio": round(ps / peer_ps if peer_ps else 0.0, 3),
        "runs_ps": [round(r.products_per_s, 1) for r in rows],
        "write_ms": _phase(rows, "write_s"),
        "total_ms": _phase(rows, "total_s"),
        "db_ms_per_product": _db_ms(rows),
        "mongo_cmds_per_batch": rows[0].mongo_cmds_per_batch,
        "runs": [r.as_dict() for r in rows],
    }


def compare(
    engines: Sequence[Row], peers: Sequence[Row], separate: Sequence[Row] = ()
) -> dict[str, Any]:
    """One latency's comparison (pure): each side's mean over its runs, the ratio of the
    means, the target, and where the time goes (phases, slots busy, the server's CPU per
    product; means too). `separate`: the engine's runs with BACKFILL_CLIENT_BULK_WRITE=0,
    shown beside (the target is judged on the engine as it ships)."""
    engine_ps = statistics.fmean(r.products_per_s for r in engines)
    peer_ps = statistics.fmean(r.products_per_s for r in peers)
    ratio = engine_ps / peer_ps if peer_ps else 0.0
    first = engines[0]
    out = {
        "latency_ms": first.latency_ms,
        "processes": first.processes,
        "concurrency": first.concurrency,
        "pool": first.pool,
        "products": first.products,
        "engine_ps": round(engine_ps, 1),
        "peer_ps": round(peer_ps, 1),
        "ratio": round(ratio, 3),
        "met": ratio >= TARGET_RATIO,
        "runs_ps": {
            "engine": [round(r.products_per_s, 1) for r in engines],
            "peer": [round(r.products_per_s, 1) for r in peers],
        },
        "phases": {
            key: {"engine_ms": _phase(engines, key), "peer_ms": _phase(peers, key)}
            for key in PHASE_KEYS
        },
        "slot_busy": {"engine": _busy(engines), "peer": _busy(peers)},
        "db_ms_per_product": {"engine": _db_ms(engines), "peer": _db_ms(peers)},
        "engine": first.as_dict(),
        "peer": peers[0].as_dict(),
        "engine_runs": [r.as_dict() for r in engines],
        "peer_runs": [r.as_dict() for r in peers],
    }
    if separate:
        out["separate"] = _separate(separate, peer_ps)
    return out


def run_order(
    latency_no: int, runs_each: int, sides: tuple[str, ...] = (ENGINE, PEER)
) -> tuple[str, ...]:
    """Who runs when at the `latency_no`-th latency: A B B A ... (mirrored, so no side
    always runs first or last), `sides` in their order at even latencies, reversed at odd."""
    a = sides if latency_no % 2 == 0 else sides[::-1]
    order: list[str] = []
    for k in range(runs_each):
        order += a if k % 2 == 0 else a[::-1]
    return tuple(order)


def run_series(
    bench: Bench,
    n: int,
    latencies: tuple[float, ...],
    processes: int,
    concurrency: int,
    say: Callable[[str], None] = print,
    *,
    runs_each: int = DEFAULT_RUNS_EACH,
    bench_for: BenchFor | None = None,
    separate_writes: tuple[float, ...] = (),
) -> list[dict[str, Any]]:
    """Engine and peer at each latency on the same slots, `runs_each` runs each in
    `run_order`; one comparison per latency. At the latencies in `separate_writes` the
    engine also runs with BACKFILL_CLIENT_BULK_WRITE=0, in the same mirrored order.

    `bench_for(tag)` gives each run the servers it runs on (`scenarios.fresh_bench`: a
    SecantusDB, Redis and catalog stand-in of its own); without it every run shares
    `bench`'s.
    """
    say(f"peer series: {processes} x prefork({concurrency}), {n} products, {runs_each} runs each")
    out = []
    for i, latency in enumerate(latencies):
        cfg = SystemConfig(processes, "prefork", concurrency, latency)
        sides = (ENGINE, PEER, SEPARATE) if latency in separate_writes else (ENGINE, PEER)
        rows: dict[str, list[Row]] = {who: [] for who in sides}
        for k, who in enumerate(run_order(i, runs_each, sides)):
            tag = f"peer-{latency:g}ms-{k}-{who}"
            with bench_on(bench, bench_for, tag) as here_bench:
                here = ceiling(here_bench, n)
                if who == PEER:
                    row = peer_run(here_bench, n, cfg)
                else:
                    together = who == ENGINE
                    row = system(here_bench, n, cfg, rerun=False, client_bulk_write=together)[0]
            row.ceiling_ps = here.products_per_s
            rows[who].append(row)
        pair = compare(rows[ENGINE], rows[PEER], rows.get(SEPARATE, ()))
        runs = pair["runs_ps"]
        say(
            f"  {latency:g} ms: engine {pair['engine_ps']:.0f}/s {runs['engine']}, "
            f"peer {pair['peer_ps']:.0f}/s {runs['peer']}, "
            f"engine/peer {pair['ratio']:.2f}: {'met' if pair['met'] else 'missed'}"
        )
        if "separate" in pair:
            sep = pair["separate"]
            say(f"    writes apart: engine {sep['engine_ps']:.0f}/s, /peer {sep['ratio']:.2f}")
        out.append(pair)
    return out
