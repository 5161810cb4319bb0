"""The scaling series: products/s at 1, 2, 4, 8 worker slots where the work waits on the API.

At 150-300 ms per catalog request a batch spends most of its time waiting, so more slots
should mean proportionally more products/s until something else binds: the database (its
ceiling, measured in the same run) or the global rate limit (its cap, configured). The
analysis here is pure: it takes the rows and says, per doubling, whether the efficiency
target was met and what the measurements say about why not.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

from backfill_engine.settings import DEFAULT_SUBCHUNK_SIZE
from bench.scenarios import Bench, BenchFor, Row, SystemConfig, bench_on, ceiling, system

DEFAULT_SCALING_PRODUCTS = 20_000
DEFAULT_SCALING_LATENCIES_MS = (150.0, 300.0)
DEFAULT_SCALING_SLOTS = (1, 2, 4, 8)
# Slots per worker process. prefork: two per process, as the main matrix and a compose
# deployment scale it (more processes); threads: one process holds all its slots, since
# threads suit a task that mostly waits on I/O.
DEFAULT_SLOTS_PER_PROCESS = {"prefork": 2, "threads": 8}
TARGET_EFFICIENCY = 0.8
TARGET_BOUND_SHARE = 0.8  # the efficiency target holds until 80 % of min(ceiling, rate cap)
# What counts as "saturated" when naming the reason for a missed doubling.
DB_BUSY_SATURATED = 0.8  # SecantusDB CPU seconds per wall second (one interpreter)
RATE_SHARE_SATURATED = 0.9  # catalog requests/s over the configured limit
MACHINE_BUSY_SATURATED = 90.0  # % of all cores, every user's processes included
# Each configuration may take this multiple of its ideal time (catalog waits spread over
# its slots), plus a fixed allowance for planning and worker start-up, before it fails.
TIMEOUT_FACTOR = 2.0
TIMEOUT_SLACK_SECONDS = 90.0


def slot_mix(slots: int, pool: str, per_process: dict[str, int]) -> tuple[int, int]:
    """(processes, concurrency) giving `slots` pool slots with `pool`."""
    cap = max(1, per_process.get(pool, 1))
    concurrency = min(slots, cap)
    return math.ceil(slots / concurrency), concurrency


def rate_cap_products_per_s(rate_per_second: float, subchunk: int = DEFAULT_SUBCHUNK_SIZE) -> float:
    """The global limiter's cap in products/s: one token per catalog request of `subchunk` ids."""
    return rate_per_second * subchunk


def ideal_seconds(n: int, batch_size: int, latency_ms: float, slots: int) -> float:
    """Time the catalog waits alone take for `n` products spread over `slots`."""
    requests_per_batch = math.ceil(batch_size / DEFAULT_SUBCHUNK_SIZE)
    batches = math.ceil(n / batch_size)
    return batches * requests_per_batch * latency_ms / 1000 / slots


def run_timeout(n: int, batch_size: int, latency_ms: float, slots: int) -> float:
    """Seconds one scaling run may take before it fails the bench instead of hanging."""
    ideal = ideal_seconds(n, batch_size, latency_ms, slots)
    return TIMEOUT_FACTOR * ideal + TIMEOUT_SLACK_SECONDS


def bound_seconds(
    n: int, batch_size: int, latencies: tuple[float, ...], pools: int, slots: tuple[int, ...]
) -> float:
    """The most the whole series may take: every run's timeout added up."""
    return pools * sum(run_timeout(n, batch_size, lat, s) for lat in latencies for s in slots)


def series(
    bench: Bench,
    n: int,
    latency_ms: float,
    pool: str,
    slots: tuple[int, ...],
    per_process: dict[str, int],
) -> list[Row]:
    """One curve: the ceiling now, then a first run at each slot count (no rerun)."""
    here = ceiling(bench, n)
    bench.say(f"scaling {pool} at {latency_ms:.0f} ms: ceiling {here.products_per_s:,.0f}/s")
    rows: list[Row] = []
    for count in slots:
        procs, conc = slot_mix(count, pool, per_process)
        cfg = SystemConfig(procs, pool, conc, latency_ms)
        limit = run_timeout(n, bench.batch_size, latency_ms, count)
        (row,) = system(bench, n, cfg, rerun=False, timeout=limit)
        rows.append(replace(row, scenario="scaling", ceiling_ps=here.products_per_s))
    return rows


def run_all(
    bench: Bench,
    n: int,
    latencies: tuple[float, ...],
    pools: tuple[str, ...],
    slots: tuple[int, ...],
    per_process: dict[str, int],
    *,
    bench_for: BenchFor | None = None,
) -> list[Row]:
    """Every curve of the series: each pool at each latency.

    `bench_for(tag)` gives each curve the servers it runs on (`scenarios.fresh_bench`: of
    its own, so a curve does not depend on what the runs before it wrote); without it
    every curve shares `bench`'s.
    """
    most = bound_seconds(n, bench.batch_size, latencies, len(pools), slots)
    bench.say(
        f"scaling series: {len(latencies) * len(pools) * len(slots)} runs, at most {most:.0f} s"
    )
    rows: list[Row] = []
    for latency in latencies:
        for pool in pools:
            tag = f"scaling-{pool}-{latency:g}ms"
            with bench_on(bench, bench_for, tag) as here:
                rows += series(here, n, latency, pool, slots, per_process)
    return rows


@dataclass(frozen=True)
class Point:
    """One slot count of one curve, with what the target needs to judge it."""

    row: Row
    slots: int
    speedup: float
    efficiency: float
    bound_ps: float
    binds: str  # which of the two bounds is smaller: "database ceiling" or "rate cap"


def curves(rows: list[Row], rate_cap_ps: float) -> dict[tuple[str, float], list[Point]]:
    """The scaling rows grouped into curves (pool, latency), each sorted by slots."""
    grouped: dict[tuple[str, float], list[Row]] = {}
    for r in rows:
        if r.scenario == "scaling" and r.slots and r.pool and r.latency_ms is not None:
            grouped.setdefault((r.pool, r.latency_ms), []).append(r)
    out: dict[tuple[str, float], list[Point]] = {}
    for key, members in sorted(grouped.items()):
        members.sort(key=lambda r: r.slots or 0)
        base = members[0]
        base_ps = base.products_per_s / (base.slots or 1)  # per slot, if the curve has no 1
        points = []
        for r in members:
            slots = r.slots or 1
            speedup = r.products_per_s / base_ps if base_ps else 0.0
            ceil = r.ceiling_ps or math.inf
            binds = "database ceiling" if ceil <= rate_cap_ps else "rate cap"
            points.append(Point(r, slots, speedup, speedup / slots, min(ceil, rate_cap_ps), binds))
        out[key] = points
    return out


def why(prev: Row, row: Row, rate_per_second: float) -> str:
    """What the measurements say limited `row` (the larger slot count of a doubling)."""
    reasons = []
    busy = row.db_busy
    if busy is not None and busy >= DB_BUSY_SATURATED:
        db_ms = row.db_ms_per_product or 0.0
        limit = f", so it tops out near {1000 / db_ms:,.0f}/s" if db_ms else ""
        reasons.append(
            f"SecantusDB busy {100 * busy:.0f} % of the run at {db_ms:.2f} CPU-ms per "
            f"product{limit}"
        )
    rps = row.catalog_rps
    if rps is not None and rps >= RATE_SHARE_SATURATED * rate_per_second:
        reasons.append(f"rate limit: {rps:,.0f} of {rate_per_second:,.0f} catalog requests/s")
    if row.machine_busy_pct is not None and row.machine_busy_pct >= MACHINE_BUSY_SATURATED:
        reasons.append(
            f"the machine's CPUs {row.machine_busy_pct:.0f} % busy (other users included)"
        )
    growth = _phase_growth(prev, row)
    if not reasons:
        # Nothing saturated: say how busy each was, so the reader sees it was not the cause.
        quiet = []
        if busy is not None:
            quiet.append(f"SecantusDB busy {100 * busy:.0f} %")
        if row.machine_busy_pct is not None:
            quiet.append(f"machine CPUs {row.machine_busy_pct:.0f} %")
        if rps is not None:
            quiet.append(f"{rps:,.0f} of {rate_per_second:,.0f} catalog requests/s")
        reasons.append("no saturated resource (" + ", ".join(quiet) + ")")
    if growth:
        reasons.append(growth)
    return "; ".join(reasons)


def _phase_growth(prev: Row, row: Row) -> str:
    """The batch-time phase that grew most between two slot counts, as text."""
    a, b = prev.timings, row.timings
    if "total_s" not in a or "total_s" not in b:
        return ""
    phases = [k for k in ("lease_s", "read_s", "source_s", "write_s", "checkpoint_s") if k in b]
    if not phases:
        return ""
    grew = max(phases, key=lambda k: b[k] - a.get(k, 0.0))
    side = "waiting on the catalog" if grew == "source_s" else "database round trips"
    return (
        f"batch {1000 * a['total_s']:,.0f} -> {1000 * b['total_s']:,.0f} ms, most in "
        f"{grew.removesuffix('_s')} ({1000 * a.get(grew, 0.0):,.0f} -> {1000 * b[grew]:,.0f} ms,"
        f" {side})"
    )


def doublings(rows: list[Row], rate_per_second: float) -> list[dict[str, Any]]:
    """Per curve and per doubling of slots: efficiency, met / missed / not applicable, why."""
    cap = rate_cap_products_per_s(rate_per_second)
    out: list[dict[str, Any]] = []
    for (pool, latency), points in curves(rows, cap).items():
        for prev, cur in itertools.pairwise(points):
            threshold = TARGET_BOUND_SHARE * cur.bound_ps
            item: dict[str, Any] = {
                "pool": pool,
                "latency_ms": latency,
                "from_slots": prev.slots,
                "slots": cur.slots,
                "label": cur.row.label,
                "products_per_s": round(cur.row.products_per_s, 1),
                "speedup": round(cur.speedup, 2),
                "efficiency": round(cur.efficiency, 2),
                "bound_ps": round(cur.bound_ps, 1),
                "binds": cur.binds,
                "threshold_ps": round(threshold, 1),
            }
            if prev.row.products_per_s >= threshold:
                item["met"] = None  # the curve had reached the bound already
                item["why"] = (
                    f"not applicable: {prev.slots} slots already reached "
                    f"{prev.row.products_per_s:,.0f}/s >= 80 % of the {cur.binds}"
                )
            elif cur.efficiency >= TARGET_EFFICIENCY or cur.row.products_per_s >= threshold:
                item["met"] = True
                item["why"] = (
                    "reached 80 % of the bound"
                    if cur.efficiency < TARGET_EFFICIENCY
                    else f"efficiency {cur.efficiency:.2f}"
                )
            else:
                item["met"] = False
                item["why"] = why(prev.row, cur.row, rate_per_second)
            out.append(item)
    return out


def flattening(rows: list[Row], rate_per_second: float) -> list[dict[str, Any]]:
    """Per curve: the best throughput, where it stops scaling (first missed doubling) and why."""
    cap = rate_cap_products_per_s(rate_per_second)
    steps = doublings(rows, rate_per_second)
    out = []
    for (pool, latency), points in curves(rows, cap).items():
        best = max(points, key=lambda p: p.row.products_per_s)
        miss = next(
            (
                s
                for s in steps
                if s["pool"] == pool and s["latency_ms"] == latency and s["met"] is False
            ),
            None,
        )
        out.append(
            {
                "pool": pool,
                "latency_ms": latency,
                "best_ps": round(best.row.products_per_s, 1),
                "best_slots": best.slots,
                "bound_ps": round(points[-1].bound_ps, 1),
                "binds": points[-1].binds,
                "flattens_at": None if miss is None else miss["slots"],
                "why": "scales to the last point" if miss is None else miss["why"],
            }
        )
    return out
