"""Rendering job state for people: a rich progress bar and one-line summaries."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import Any

from bson import json_util
from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from backfill_engine.health import throttle_view
from backfill_engine.store import now_utc
from orchestrator.audit import set_changes
from orchestrator.jobs import JobSummary
from orchestrator.tuning import describe_rate

SHOWN_CHANGES = 3  # `status` lists this many of the newest `backfill set` changes


def rate_line(job: dict[str, Any]) -> str:
    """`50/s`, or `auto 37.2/s (ceiling 200/s) — 429 on 2 of 41 requests, 12:00:03 UTC`."""
    auto = job.get("rate_auto")
    if not auto:
        return describe_rate(job)
    ceiling = auto.get("ceiling")
    line = f"auto {float(auto.get('current') or 0):.1f}/s"
    line += "" if ceiling is None else f" (ceiling {ceiling:g}/s)"
    when = auto.get("changed_at")
    stamp = f", {when:%H:%M:%S} UTC" if hasattr(when, "strftime") else ""
    return f"{line} — {auto.get('reason', '')}{stamp}"


def change_line(entry: dict[str, Any]) -> str:
    """One `backfill set`: when, who, what."""
    what = ", ".join(
        f"{k} {v.get('from')} → {v.get('to')}" for k, v in (set_changes(entry) or {}).items()
    )
    when = entry.get("at")
    stamp = f"{when:%Y-%m-%d %H:%M:%S}" if hasattr(when, "strftime") else ""
    return f"{stamp} {entry.get('user', '?')}@{entry.get('host', '?')}: {what}"


def counters_line(items: dict[str, int], quarantined: int) -> str:
    return (
        f"written {items.get('written', 0):,} · unchanged {items.get('unchanged', 0):,} · "
        f"missing {items.get('missing', 0):,} · invalid {items.get('invalid', 0):,} · "
        f"deleted {items.get('deleted', 0):,} · quarantined {quarantined:,}"
    )


def _clock(when: dt.datetime | None) -> str:
    return when.strftime("%H:%M:%S") if when else "?"


def throttle_line(job: dict[str, Any], now: dt.datetime | None = None) -> str | None:
    """Why workers hold the job back now, or when they last did; None if they never did."""
    view = throttle_view(job, now or now_utc())
    if view is None:
        return None
    if view.active:
        return f"held back: {view.reason} (since {_clock(view.since)} UTC)"
    ended = _clock(view.until or view.seen_at)
    return f"last held back: {view.reason} ({_clock(view.since)} to {ended} UTC)"


def summary_table(summary: JobSummary) -> Table:
    job = summary.job
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("job", str(job["_id"]))
    table.add_row(
        "status",
        str(job["status"])
        + (f" ({job['pause_reason']})" if job.get("pause_reason") else "")
        + (f" ({job['fail_reason']})" if job.get("fail_reason") else ""),
    )
    planning = job.get("planning", {})
    table.add_row(
        "planned",
        f"{planning.get('batches', 0):,} batches / {planning.get('items', 0):,} documents"
        + ("" if planning.get("done") else " (planning…)"),
    )
    table.add_row("batches", " · ".join(f"{k} {v}" for k, v in summary.batches.items() if v))
    table.add_row(
        "documents",
        f"{summary.items.get('processed', 0):,} processed of {summary.items.get('size', 0):,}",
    )
    table.add_row("items", counters_line(summary.items, summary.quarantined))
    table.add_row("backfill", str(job.get("backfill", "?")))
    params = {k: v for k, v in (job.get("params") or {}).items() if k not in ("ids", "replay_of")}
    if params:
        table.add_row("params", ", ".join(f"{k}={v!r}" for k, v in sorted(params.items())))
    if job.get("scope") or job.get("limit"):
        scope = json_util.dumps(job.get("scope") or {})
        table.add_row("scope", scope + (f", limit {job['limit']:,}" if job.get("limit") else ""))
    unknown = job.get("unknown_to_workers") or []
    if unknown:
        # A worker without the definition does not take the batches: say so, or the job
        # would seem to stall for no reason.
        table.add_row(
            "not known to",
            f"workers on {', '.join(sorted(unknown))}: backfill {job.get('backfill')!r} is "
            "not in their BACKFILL_IMPORTS or migrations directory",
        )
    lacking = job.get("workers_lacking_settings") or []
    if lacking:
        table.add_row(
            "not taken by",
            f"workers lacking settings ({'; '.join(sorted(lacking))}): backfill "
            f"{job.get('backfill')!r} needs them; workers that have them take its batches",
        )
    throttle = throttle_line(job)
    if throttle:
        table.add_row("throttle", throttle)
    table.add_row("rate", rate_line(job))
    for entry in job.get("audit", [])[-SHOWN_CHANGES:]:
        if set_changes(entry):
            table.add_row("changed", change_line(entry), end_section=False)
    if job.get("times_interrupted") or job.get("messages_resent"):
        table.add_row(
            "recovered",
            f"{job.get('times_interrupted', 0)} expired leases, "
            f"{job.get('messages_resent', 0)} lost messages",
        )
    return table


class _JobProgress(Progress):
    """A progress bar framed by the job id above and its counters below.

    The id and the counters get lines of their own: squeezed into the bar's row they
    were cut to `name-2024…` and `q 1,…` at 80 columns.
    """

    header: Text = Text("")
    footer: Text = Text("")

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.header
        yield self.make_tasks_table(self.tasks)
        yield self.footer


class LiveProgress:
    """A progress bar of documents processed, with rate and ETA, refreshed on every tick."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = _JobProgress(
            TextColumn("{task.fields[status]}"),
            BarColumn(bar_width=None),
            TaskProgressColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TextColumn("{task.fields[rate]:,.0f}/s"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            expand=True,
        )
        self.task: Any = None
        self.started = time.monotonic()
        self.first_done: int | None = None

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, summary: JobSummary) -> None:
        items = summary.items
        done = items.get("processed", 0)
        total = max(items.get("size", 0), summary.job.get("planning", {}).get("items", 0), 1)
        if self.first_done is None:
            self.first_done = done
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = (done - self.first_done) / elapsed
        status = str(summary.job["status"])
        self.progress.header = Text(f"job {summary.job['_id']} · documents", style="bold")
        throttle = throttle_line(summary.job)
        footer = counters_line(items, summary.quarantined)
        self.progress.footer = Text(footer + (f"\n{throttle}" if throttle else ""))
        if self.task is None:
            self.task = self.progress.add_task("", total=total, rate=rate, status=status)
        self.progress.update(self.task, completed=done, total=total, rate=rate, status=status)


def jobs_table(rows: list[dict[str, Any]]) -> Table:
    """Newest jobs, one line each, fitting 80 columns.

    No `backfill` or `created` column: the job id is `<backfill>-<UTC yyyymmdd-hhmmss>-<hex>`
    and already says both (`--json` has every field).
    """
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("job", no_wrap=True, min_width=len("backfill-20240405-120000-ab12"))
    table.add_column("status", no_wrap=True, min_width=len("completed_with_errors"))
    table.add_column("batches", justify="right", no_wrap=True)
    table.add_column("documents", justify="right", no_wrap=True)
    for job in rows:
        planning = job.get("planning", {})
        table.add_row(
            str(job["_id"]),
            job["status"],
            f"{planning.get('batches', 0):,}",
            f"{planning.get('items', 0):,}",
        )
    return table


def render(summary: JobSummary) -> Group:
    return Group(summary_table(summary))
