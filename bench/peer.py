"""The peer series: the engine next to the Celery `group` a team would write instead.

Per catalog latency, on the same worker slots (processes x concurrency, prefork) and the
same products, each in a fresh database: the engine's catalog backfill
(`scenarios.system`, first run only) and the peer (bench/peer_app.py). The order
alternates per latency, so neither always runs on the fuller server. Both are timed from
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import group

from bench import peer_app
from bench.probes import CpuMeter, calls_delta
from bench.scenarios import Bench, Row, SystemConfig, ceiling, system
from bench.servers import wait_workers_ready
from migrations.versions._catalog import PRODUCTS, SYNCED_AT_FIELD
from orchestrator.stack import ManagedProcess, spawn

DEFAULT_PEER_LATENCIES_MS = (0.0, 150.0)
DEFAULT_PEER_PROCESSES = 2
TARGET_RATIO = 0.9
IDS_PER_TASK = 500  # what a team picks, and the engine's batch size in the bench
WORKER_READY_TIMEOUT = 90.0
PHASE_KEYS = ("lease_s", "read_s", "source_s", "write_s", "checkpoint_s", "total_s")


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


def compare(engine: Row, peer: Row) -> dict[str, Any]:
    """One latency's comparison (pure): the ratio, the target, where the time goes."""
    ratio = engine.products_per_s / peer.products_per_s if peer.products_per_s else 0.0
    phases = {
        key: {
            "engine_ms": round(1000 * engine.timings[key], 2) if key in engine.timings else None,
            "peer_ms": round(1000 * peer.timings[key], 2) if key in peer.timings else None,
        }
        for key in PHASE_KEYS
    }
    return {
        "latency_ms": engine.latency_ms,
        "processes": engine.processes,
        "concurrency": engine.concurrency,
        "pool": engine.pool,
        "products": engine.products,
        "engine_ps": round(engine.products_per_s, 1),
        "peer_ps": round(peer.products_per_s, 1),
        "ratio": round(ratio, 3),
        "met": ratio >= TARGET_RATIO,
        "phases": phases,
        "slot_busy": {"engine": slot_busy(engine), "peer": slot_busy(peer)},
        "engine": engine.as_dict(),
        "peer": peer.as_dict(),
    }


def run_series(
    bench: Bench,
    n: int,
    latencies: tuple[float, ...],
    processes: int,
    concurrency: int,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Engine and peer at each latency on the same slots; one comparison per latency."""
    say(f"peer series: {processes} x prefork({concurrency}), {n} products")
    out = []
    for i, latency in enumerate(latencies):
        cfg = SystemConfig(processes, "prefork", concurrency, latency)
        rows: dict[str, Row] = {}
        order = ("engine", "peer") if i % 2 == 0 else ("peer", "engine")
        for who in order:
            here = ceiling(bench, n)
            if who == "engine":
                row = system(bench, n, cfg, rerun=False)[0]
            else:
                row = peer_run(bench, n, cfg)
            row.ceiling_ps = here.products_per_s
            rows[who] = row
        pair = compare(rows["engine"], rows["peer"])
        say(
            f"  {latency:g} ms: engine {pair['engine_ps']:.0f}/s, peer {pair['peer_ps']:.0f}/s, "
            f"engine/peer {pair['ratio']:.2f}: {'met' if pair['met'] else 'missed'}"
        )
        out.append(pair)
    return out
