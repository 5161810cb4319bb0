"""Command line of the bench: parse options, run every scenario once, write results."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench import (
    auto_rate,
    floor,
    journal_cost,
    local_catalog,
    peer,
    report,
    scaling,
    validator_cost,
)
from bench.data import product_docs
from bench.scenarios import (
    Bench,
    Row,
    SystemConfig,
    ceiling,
    describe,
    fresh_bench,
    naive,
    system,
    with_ratios,
)
from bench.servers import start_servers
from catalog_service.limiters import SCHEMES
from orchestrator.stack import EMBEDDED_READ_IDS

DEFAULT_PRODUCTS = 15_000
DEFAULT_NAIVE_PRODUCTS = 300
DEFAULT_RATE = 2000.0  # catalog requests/s for the global limiter: high, so it never binds
MEMORY_CHECK_DIVISOR = 4  # the memory check also runs a quarter of --products
DEFAULT_READ_IDS0_PRODUCTS = 15_000  # most products of the BACKFILL_READ_IDS=0 run
VALIDATOR_PRODUCTS, VALIDATOR_ROUNDS = 10_000, 3  # the validator probe, on its own server


@dataclass
class Options:
    products: int = DEFAULT_PRODUCTS
    naive_products: int = DEFAULT_NAIVE_PRODUCTS
    processes: tuple[int, ...] = (1, 2, 4)
    latencies: tuple[float, ...] = (0.0, 20.0)
    pools: tuple[str, ...] = ("prefork", "threads")
    concurrency: int = 2
    # Also run 1 process x 1 slot per latency: SecantusDB serves one request at a time and
    # pays for overlapping transactions, so a single slot is its best case at 0 ms.
    single_slot: bool = True
    rate: float = DEFAULT_RATE
    batch_size: int = 500
    read_ids: int = EMBEDDED_READ_IDS  # BACKFILL_READ_IDS of the workers
    rerun: bool = True
    memory_check: bool = True
    results_dir: Path = Path("bench/results")
    doc: Path | None = Path("docs/benchmarks.md")
    chart: Path | None = Path("docs/benchmarks.png")
    log_dir: Path = Path(".backfill/bench")
    readme: Path | None = Path("README.md")
    # The scaling series (issue 12 part 1): where the work waits on the catalog API.
    with_scaling: bool = True
    scaling_products: int = scaling.DEFAULT_SCALING_PRODUCTS
    scaling_latencies: tuple[float, ...] = scaling.DEFAULT_SCALING_LATENCIES_MS
    scaling_slots: tuple[int, ...] = scaling.DEFAULT_SCALING_SLOTS
    scaling_pools: tuple[str, ...] = ("prefork", "threads")
    scaling_per_process: dict[str, int] = field(
        default_factory=lambda: dict(scaling.DEFAULT_SLOTS_PER_PROCESS)
    )
    # The `--rate auto` series (issue 12 part 2): about 2.5 minutes per limiter scheme.
    with_auto_rate: bool = True
    # The floor of a diff-only backfill (issue 19 part 2), measured before each compared run.
    with_floor: bool = True
    read_ids0_products: int | None = None  # None: --products, at most 15 000
    auto_rate_schemes: tuple[str, ...] = SCHEMES
    # The peer series (issue 19 part 3): the engine next to a hand-written Celery group.
    with_peer: bool = True
    peer_latencies: tuple[float, ...] = peer.DEFAULT_PEER_LATENCIES_MS
    # ... where the engine also runs with BACKFILL_CLIENT_BULK_WRITE=0 (its writes apart)
    peer_separate_writes: tuple[float, ...] = peer.DEFAULT_SEPARATE_WRITES_LATENCIES_MS
    # The journal series (issue 18): first runs with and without it, and a revert.
    with_journal_cost: bool = True
    # What 20240407's validator costs each later write (bench/validator_cost.py).
    with_validator_cost: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "products": self.products,
            "naive_products": self.naive_products,
            "processes": list(self.processes),
            "latencies_ms": list(self.latencies),
            "pools": list(self.pools),
            "concurrency": self.concurrency,
            "single_slot": self.single_slot,
            "rate_per_second": self.rate,
            "batch_size": self.batch_size,
            "read_ids": self.read_ids,
            "scaling": self.with_scaling,
            "scaling_products": self.scaling_products,
            "scaling_latencies_ms": list(self.scaling_latencies),
            "scaling_slots": list(self.scaling_slots),
            "scaling_pools": list(self.scaling_pools),
            "scaling_slots_per_process": dict(self.scaling_per_process),
            "auto_rate": self.with_auto_rate,
            "floor": self.with_floor,
            "read_ids0_products": self.read_ids0_products,
            "auto_rate_schemes": list(self.auto_rate_schemes),
            "peer": self.with_peer,
            "peer_latencies_ms": list(self.peer_latencies),
            "peer_separate_writes_ms": list(self.peer_separate_writes),
            "journal_cost": self.with_journal_cost,
            "validator_cost": self.with_validator_cost,
        }


@dataclass
class Result:
    rows: list[Row]
    memory: list[Row]
    scaling: list[Row]
    json_path: Path
    env: dict[str, Any]
    floor: dict[str, Any] | None = None


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _per_process(text: str) -> dict[str, int]:
    """`prefork=2,threads=8` -> {"prefork": 2, "threads": 8}."""
    out = {}
    for part in text.split(","):
        if part.strip():
            pool, _, count = part.partition("=")
            out[pool.strip()] = int(count)
    return out


def parse(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--products", type=int, default=DEFAULT_PRODUCTS, help="products per system run")
    p.add_argument(
        "--naive-products",
        type=int,
        default=DEFAULT_NAIVE_PRODUCTS,
        help="products the naive loop does",
    )
    p.add_argument(
        "--processes", type=_ints, default=(1, 2, 4), help="worker processes, e.g. 1,2,4"
    )
    p.add_argument("--latencies", type=_floats, default=(0.0, 20.0), help="catalog latencies in ms")
    p.add_argument("--pools", default="prefork,threads", help="Celery pools to compare")
    p.add_argument("--concurrency", type=int, default=2, help="pool slots per worker process")
    p.add_argument(
        "--no-single-slot",
        action="store_true",
        help="skip the extra 1 process x 1 slot run at each latency",
    )
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, help="global catalog requests/s")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument(
        "--read-ids",
        type=int,
        default=EMBEDDED_READ_IDS,
        help="ids per $in read (BACKFILL_READ_IDS; 0: one read per sub-chunk)",
    )
    p.add_argument("--no-rerun", action="store_true", help="skip the rerun of each job")
    p.add_argument("--no-memory-check", action="store_true", help="skip the second-size run")
    p.add_argument("--results-dir", type=Path, default=Path("bench/results"))
    p.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"))
    p.add_argument("--chart", type=Path, default=Path("docs/benchmarks.png"))
    p.add_argument("--no-doc", action="store_true", help="write only the JSON results")
    p.add_argument("--log-dir", type=Path, default=Path(".backfill/bench"))
    p.add_argument(
        "--readme",
        type=Path,
        default=Path("README.md"),
        help="file whose bench markers get the headline numbers",
    )
    s = p.add_argument_group("scaling series (catalog-bound: more slots, more products/s)")
    s.add_argument("--no-scaling", action="store_true", help="skip the scaling series")
    s.add_argument(
        "--scaling-products",
        type=int,
        default=scaling.DEFAULT_SCALING_PRODUCTS,
        help="products per scaling run (default %(default)s)",
    )
    s.add_argument(
        "--scaling-latencies",
        type=_floats,
        default=scaling.DEFAULT_SCALING_LATENCIES_MS,
        help="catalog latencies in ms, e.g. 150,300",
    )
    s.add_argument(
        "--scaling-slots", type=_ints, default=scaling.DEFAULT_SCALING_SLOTS, help="e.g. 1,2,4,8"
    )
    s.add_argument("--scaling-pools", default="prefork,threads", help="Celery pools to scale")
    s.add_argument(
        "--scaling-slots-per-process",
        type=_per_process,
        default=dict(scaling.DEFAULT_SLOTS_PER_PROCESS),
        help="most pool slots per worker process, per pool, e.g. prefork=2,threads=8",
    )
    p.add_argument(
        "--no-auto-rate",
        action="store_true",
        help="skip the `--rate auto` series (~2.5 min per scheme)",
    )
    _floor_args(p)
    _add_series_options(p)
    a = p.parse_args(argv)
    if a.products < 1 or a.naive_products < 1 or a.scaling_products < 1:
        p.error("--products, --naive-products and --scaling-products must be at least 1")
    if a.read_ids0_products is not None and a.read_ids0_products < 1:
        p.error("--read-ids0-products must be at least 1")
    if not a.scaling_slots or min(a.scaling_slots) < 1:
        p.error("--scaling-slots must list slot counts of at least 1")
    unknown = [x for x in a.auto_rate_schemes if x not in SCHEMES]
    if unknown or not a.auto_rate_schemes:
        p.error(f"--auto-rate-schemes takes some of {','.join(SCHEMES)}")
    return Options(
        products=a.products,
        naive_products=a.naive_products,
        processes=a.processes,
        latencies=a.latencies,
        pools=tuple(x.strip() for x in a.pools.split(",") if x.strip()),
        concurrency=a.concurrency,
        single_slot=not a.no_single_slot,
        rate=a.rate,
        batch_size=a.batch_size,
        read_ids=a.read_ids,
        rerun=not a.no_rerun,
        memory_check=not a.no_memory_check,
        results_dir=a.results_dir,
        doc=None if a.no_doc else a.doc,
        chart=None if a.no_doc else a.chart,
        log_dir=a.log_dir,
        readme=None if a.no_doc else a.readme,
        with_scaling=not a.no_scaling,
        scaling_products=a.scaling_products,
        scaling_latencies=a.scaling_latencies,
        scaling_slots=tuple(sorted(set(a.scaling_slots))),
        scaling_pools=tuple(x.strip() for x in a.scaling_pools.split(",") if x.strip()),
        scaling_per_process=a.scaling_slots_per_process,
        with_auto_rate=not a.no_auto_rate,
        with_floor=not a.no_floor,
        read_ids0_products=a.read_ids0_products,
        auto_rate_schemes=a.auto_rate_schemes,
        with_peer=not a.no_peer,
        peer_latencies=a.peer_latencies,
        peer_separate_writes=a.peer_separate_writes,
        with_journal_cost=not a.no_journal_cost,
        with_validator_cost=not a.no_validator_cost,
    )


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _add_series_options(p: argparse.ArgumentParser) -> None:
    """The peer series' and the auto-rate schemes' options."""
    g = p.add_argument_group("peer series (the engine next to a hand-written Celery group)")
    g.add_argument("--no-peer", action="store_true", help="skip the peer series")
    p.add_argument(
        "--no-journal-cost",
        action="store_true",
        help="skip the journal series (first runs with and without it, and a revert)",
    )
    p.add_argument(
        "--no-validator-cost",
        action="store_true",
        help="skip the probe of what 20240407's validator costs each write",
    )
    g.add_argument(
        "--peer-latencies",
        type=_floats,
        default=peer.DEFAULT_PEER_LATENCIES_MS,
        help="catalog latencies in ms for the peer series, e.g. 0,150",
    )
    g.add_argument(
        "--peer-separate-writes",
        type=_floats,
        default=peer.DEFAULT_SEPARATE_WRITES_LATENCIES_MS,
        help="of those latencies, where the engine also runs with BACKFILL_CLIENT_BULK_WRITE=0 "
        "(its sub-chunk writes as collection commands of their own); '' for none",
    )
    p.add_argument(
        "--auto-rate-schemes",
        type=_names,
        default=SCHEMES,
        help=f"limiter schemes the `--rate auto` series runs against, e.g. {','.join(SCHEMES)}",
    )


def _peer_series(bench: Bench, opts: Options, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Engine and peer on the same slots at each --peer-latencies (empty with --no-peer)."""
    if not opts.with_peer or not opts.peer_latencies:
        return []
    return peer.run_series(
        bench,
        opts.products,
        opts.peer_latencies,
        peer.DEFAULT_PEER_PROCESSES,
        opts.concurrency,
        say,
        # Servers of its own per run: a run's ratio then does not depend on what the
        # matrix, scaling and floor series wrote before it, or the other side's runs.
        bench_for=partial(fresh_bench, bench),
        separate_writes=opts.peer_separate_writes,
    )


def run(opts: Options, say: Callable[[str], None] = print) -> Result:
    """Start the servers, run every scenario, write the JSON (and the doc unless disabled)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%S")
    log_dir = opts.log_dir / stamp
    load = os.getloadavg()
    servers = start_servers(log_dir)
    t_start = time.monotonic()
    try:
        say(f"servers up: {servers.mongo.url} {servers.redis_proc.url} {servers.catalog.url}")
        biggest = max(opts.products, opts.naive_products, opts.scaling_products)
        bench = Bench(
            servers,
            product_docs(biggest),
            log_dir,
            opts.rate,
            opts.batch_size,
            read_ids=opts.read_ids,
            say=say,
        )
        rows: list[Row] = [ceiling(bench, opts.products)]
        floor_pairs: list[tuple[floor.FloorRun, Row]] = []
        say(describe(rows[-1]))
        for latency in opts.latencies:
            rows.append(naive(bench, opts.naive_products, latency))
            say(describe(rows[-1]))
        for latency in opts.latencies:
            configs = [
                SystemConfig(procs, pool, opts.concurrency, latency)
                for procs in opts.processes
                for pool in opts.pools
            ]
            single = SystemConfig(1, opts.pools[0], 1, latency)
            if opts.single_slot and single not in configs:
                configs.insert(0, single)
            for cfg in configs:
                # The ceiling again, on the server as it is now (see Row.ceiling_ps).
                here = ceiling(bench, opts.products)
                base = _floor_before(bench, opts, cfg)
                for row in system(bench, opts.products, cfg, rerun=opts.rerun):
                    row.ceiling_ps = here.products_per_s
                    rows.append(row)
                    if base is not None and floor.compared(row):
                        floor_pairs.append((base, row))
        memory: list[Row] = []
        if opts.memory_check:
            cfg = SystemConfig(max(opts.processes), opts.pools[0], opts.concurrency, 0.0)
            small = max(opts.batch_size, opts.products // MEMORY_CHECK_DIVISOR)
            memory = system(bench, small, cfg, rerun=False)
            same = [
                r
                for r in rows
                if r.scenario == "system" and r.label == cfg.label and r.latency_ms == 0.0
            ]
            memory += same[:1]
        scaled: list[Row] = []
        scaling_seconds = 0.0
        if opts.with_scaling:
            t_scaling = time.monotonic()
            scaled = scaling.run_all(
                bench,
                opts.scaling_products,
                opts.scaling_latencies,
                opts.scaling_pools,
                opts.scaling_slots,
                opts.scaling_per_process,
                # Each curve on servers of its own, as the peer's runs: on the bench's
                # one server a curve ran after the matrix and the curves before it.
                bench_for=partial(fresh_bench, bench),
            )
            scaling_seconds = round(time.monotonic() - t_scaling, 1)
        floor_series = _floor_series(bench, opts, floor_pairs) if opts.with_floor else None
        peer_pairs = _peer_series(bench, opts, say)
        journal_series = (
            # Each run on servers of its own: on the bench's one server, after every
            # series before it, a journaled run once met a 29 s stall of the stand-in.
            journal_cost.run_series(
                bench, opts.products, say=say, bench_for=partial(fresh_bench, bench)
            )
            if opts.with_journal_cost
            else None
        )
        validator = (
            validator_cost.measure(VALIDATOR_PRODUCTS, VALIDATOR_ROUNDS)
            if opts.with_validator_cost
            else None
        )
        auto_rows: list[dict[str, Any]] = []
        if opts.with_auto_rate:
            auto_rows = auto_rate.run_on_fresh_servers(
                log_dir / "auto-rate", say=say, schemes=opts.auto_rate_schemes
            )
        rows = with_ratios(rows)
        memory = with_ratios(memory)
        scaled = with_ratios(scaled)
        env = report.environment(
            str(servers.redis.info("server").get("redis_version", "?")),
            str(servers.client.admin.command("buildInfo").get("version", "?")),
            load,
        )
    finally:
        servers.close()
    env["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    env["bench_seconds"] = round(time.monotonic() - t_start, 1)
    if auto_rows:
        env["auto_rate"] = auto_rows  # kept in the JSON results with the rest
    if peer_pairs:
        env["peer"] = peer_pairs
    if journal_series:
        env["journal"] = journal_series
    if validator:
        env["validator_cost"] = {"products": VALIDATOR_PRODUCTS, "cpu_ms_per_doc": validator}
    if opts.with_scaling:
        env["scaling_seconds"] = scaling_seconds
        env["scaling_bound_seconds"] = round(
            scaling.bound_seconds(
                opts.scaling_products,
                opts.batch_size,
                opts.scaling_latencies,
                len(opts.scaling_pools),
                opts.scaling_slots,
            )
        )
    args = opts.as_dict()
    json_path = opts.results_dir / f"{dt.date.today().isoformat()}.json"
    report.write_json(json_path, rows, memory, env, args, scaled, floor=floor_series)
    if opts.doc is not None:
        chart = opts.chart or opts.doc.with_suffix(".png")
        report.chart(rows, chart)
        rel = os.path.relpath(chart, opts.doc.parent)
        scaling_rel = None
        if scaled:
            scaling_chart = chart.with_name(chart.stem + "-scaling" + chart.suffix)
            report.scaling_chart(scaled, opts.rate, scaling_chart)
            scaling_rel = os.path.relpath(scaling_chart, opts.doc.parent)
        block = report.generated_block(
            rows, memory, env, args, rel, scaled, scaling_rel, floor=floor_series
        )
        report.write_doc(opts.doc, block)
        if auto_rows:
            auto_rate.write_section(opts.doc, auto_rows)
        report.write_peer(opts.doc, peer_pairs)
        report.write_journal(opts.doc, journal_series)
        if validator:
            block = validator_cost.section(validator, VALIDATOR_PRODUCTS)
            report.write_between(opts.doc, validator_cost.BEGIN, validator_cost.END, block)
        if opts.readme is not None:
            report.write_readme(
                opts.readme,
                rows,
                memory,
                scaled,
                args,
                floor=floor_series,
                peer=peer_pairs,
                auto_rows=auto_rows,
                journal=journal_series,
            )
    say(report.table(rows))
    if scaled:
        say(report.scaling_table(scaled, opts.rate))
    say(report.targets_table(report.targets(rows, memory, scaled, opts.rate)))
    if floor_series is not None:
        say(report.floor_table(floor_series))
        say(report.targets_table(report.floor_targets(floor_series)))
    say(f"results in {json_path} ({env['bench_seconds']} s)")
    return Result(rows, memory, scaled, json_path, env, floor_series)


# --- The floor of a diff-only backfill (issue 19 part 2) ---


def _floor_args(p: argparse.ArgumentParser) -> None:
    f = p.add_argument_group("floor (the least database work a diff-only backfill needs)")
    f.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floor and the BACKFILL_READ_IDS=0 run (engine vs floor per document)",
    )
    f.add_argument(
        "--read-ids0-products",
        type=int,
        default=None,
        help="products of the BACKFILL_READ_IDS=0 run that counts MongoDB commands per "
        f"batch (default: --products, at most {DEFAULT_READ_IDS0_PRODUCTS})",
    )


def _floor_before(bench: Bench, opts: Options, cfg: SystemConfig) -> floor.FloorRun | None:
    """The floor on the server as it is now, before a run the floor section compares."""
    if not opts.with_floor or cfg.latency_ms != 0:
        return None
    if cfg.processes * cfg.concurrency not in floor.FLOOR_SLOTS:
        return None
    run = floor.floor(bench, opts.products)
    bench.say(f"  floor before {cfg.label}: {run.writes} writes, {run.per_product()}")
    return run


def _floor_series(
    bench: Bench, opts: Options, pairs: list[tuple[floor.FloorRun, Row]]
) -> dict[str, Any]:
    """Engine vs floor per document for the compared runs, then the commands per batch of
    a 1-slot run with BACKFILL_READ_IDS=0 (the mongod default) against its own floor."""
    points = [p for p in (floor.compare(base, row) for base, row in pairs) if p is not None]
    n = opts.read_ids0_products or min(opts.products, DEFAULT_READ_IDS0_PRODUCTS)
    base = floor.floor(bench, n, read_ids=0)
    cfg = SystemConfig(1, opts.pools[0], 1, 0.0)
    row = system(bench, n, cfg, rerun=False, read_ids=0)[0]
    reads0 = floor.compare(base, row)
    if reads0 is not None:
        # Judged for its commands per batch only: the CPU targets are the default reads'
        # (the points above).
        reads0["server_cpu_target_x"] = reads0["server_cpu_met"] = None
        reads0["own_cpu_met"] = None
    local, local_base = _local_source_point(bench, opts)
    return {
        "products": opts.products,
        "read_ids": bench.read_ids,
        "points": points,
        "reads0": reads0,
        "local": local,
        "floors": [base.as_dict() for base, _ in pairs] + [base.as_dict(), local_base.as_dict()],
    }


def _local_source_point(bench: Bench, opts: Options) -> tuple[dict[str, Any], floor.FloorRun]:
    """The 1-slot first run at 0 ms with the catalog's answers computed in the workers
    (bench.local_catalog) against a floor of its own: our CPU without the HTTP call.

    Shown beside the compared runs, not judged: the targets are the catalog backfill's.
    """
    base = floor.floor(bench, opts.products)
    cfg = SystemConfig(1, opts.pools[0], 1, 0.0)
    row = system(bench, opts.products, cfg, rerun=False, backfill=local_catalog.NAME)[0]
    point = floor.compare(base, row)
    if point is None:
        raise RuntimeError("the in-process source run measured no CPU or traffic")
    point["label"] = f"{row.label}, source in-process"
    point["catalog_requests"] = row.catalog_requests  # none: the answers never left the worker
    point["server_cpu_target_x"] = point["server_cpu_met"] = point["own_cpu_met"] = None
    return point, base


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    try:
        run(opts, say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
