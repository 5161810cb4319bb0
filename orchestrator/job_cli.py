"""CLI verbs for backfill jobs: run, jobs, status, pause, resume, cancel, retry, verify."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click
from rich.console import Console

from backfill_engine.definition import Backfill, parse_params
from backfill_engine.registry import lookup
from backfill_engine.runtime import http_client_for, worker_definitions
from backfill_engine.scope import combine, parse_filter, parse_ids
from backfill_engine.settings import Settings
from backfill_engine.sources import HttpSource, SourceContext, http_endpoint
from orchestrator import jobs
from orchestrator.audit import recent_lines
from orchestrator.commands import (
    Broker,
    RunOptions,
    launch,
    replay_starter,
    validate_run_options,
    wait_for,
)
from orchestrator.context import AppContext, check_source
from orchestrator.errors import BackfillError
from orchestrator.progress import LiveProgress, counters_line, jobs_table, summary_table
from orchestrator.rates import RateSpec, parse_rate
from orchestrator.revert import revert_status
from orchestrator.verify import verify as verify_job

console = Console()
err_console = Console(stderr=True)

EXIT_NOT_COMPLETED = 3


def _json(data: Any) -> None:
    click.echo(json.dumps(data, default=str, indent=2))


def _broker(app: AppContext) -> Broker:
    return Broker.from_settings(app.resolved_settings())


def _rate(value: str) -> RateSpec:
    """Parse `50`, `50/s`, `3000/m`, `auto` or `auto:200/s` (orchestrator/rates.py)."""
    try:
        return parse_rate(value)
    except BackfillError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("backfill")
@click.option(
    "--batch-size", type=int, default=None, help="Ids per batch (default BACKFILL_BATCH_SIZE, 500)."
)
@click.option("--max-in-flight", type=int, default=None, help="Batches queued or running at once.")
@click.option(
    "--rate",
    "rate_text",
    default=None,
    help="HTTP source requests per second across all workers, e.g. 50/s; auto[:CEIL] finds it.",
)
@click.option("--dry-run", is_flag=True, help="Decide a sample as workers would; write nothing.")
@click.option(
    "--sample",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="Documents in a dry run.",
)
@click.option(
    "--wait/--no-wait", default=False, help="Stay, sweep and show progress until the job ends."
)
@click.option(
    "--filter",
    "filter_text",
    default=None,
    help="Only documents matching this JSON query (read-only operators), e.g. "
    '\'{"category": "tools"}\'.',
)
@click.option(
    "--ids-file",
    type=click.File("r"),
    default=None,
    help="Only these ids, one per line: 24 hex digits = ObjectId, digits = int, "
    '"quoted" = that exact string, anything else = string.',
)
@click.option("--limit", type=int, default=None, help="At most this many documents (by _id).")
@click.option(
    "--param",
    "param_texts",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter the backfill declares (repeatable); typed and checked.",
)
@click.option(
    "--no-journal",
    is_flag=True,
    help="Record no before-images: faster, but `backfill revert` cannot undo the job.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def run(
    app: AppContext,
    backfill: str,
    batch_size: int | None,
    max_in_flight: int | None,
    rate_text: str | None,
    dry_run: bool,
    sample: int,
    wait: bool,
    filter_text: str | None,
    ids_file: TextIO | None,
    limit: int | None,
    param_texts: tuple[str, ...],
    no_journal: bool,
    as_json: bool,
) -> None:
    """Start a backfill job (or join the one already running) and fan it out to workers."""
    s: Settings = app.settings
    definitions = worker_definitions(s)
    definition = lookup(definitions, backfill)
    raw_params: dict[str, str] = {}
    for text in param_texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--param")
        raw_params[key.strip()] = value
    rate = RateSpec(fixed=s.rate_per_second) if rate_text is None else _rate(rate_text)
    opts = RunOptions(
        backfill=backfill,
        batch_size=s.batch_size if batch_size is None else batch_size,
        max_in_flight=s.max_in_flight if max_in_flight is None else max_in_flight,
        rate_per_second=rate.start(s.rate_per_second),
        rate_auto=rate.auto,
        rate_ceiling=rate.ceiling,
        ids=None if ids_file is None else tuple(parse_ids(ids_file)),
        scope=tuple(parse_filter(filter_text).items()) if filter_text else (),
        limit=limit,
        params=tuple(sorted(parse_params(definition, raw_params).items())),
        journal=not no_journal,
    )
    validate_run_options(opts, definitions)  # before any server is started or written to
    if dry_run:
        _dry_run(app, definition, opts, sample, as_json)
        return
    if isinstance(definition.source, HttpSource):
        # Unreachable or refusing our token: say so now rather than create a job that stalls.
        check_source(definition.source, s)
    db = app.db()
    broker = _broker(app)
    job, created = launch(db, broker, opts, definitions=definitions)
    if not as_json:
        verb = "started" if created else "joined running"
        console.print(
            f"{verb} job [bold]{job['_id']}[/] ({job['planning']['batches']:,} batches, "
            f"{job['planning']['items']:,} documents)"
        )
    if wait:
        summary = _watch(app, broker, str(job["_id"]), quiet=as_json)
        if as_json:
            _json(summary.as_dict())
        if summary.job["status"] != "completed":
            sys.exit(EXIT_NOT_COMPLETED)
    elif as_json:
        _json({"job_id": job["_id"], "created": created, "status": job["status"]})


def _dry_run(
    app: AppContext, definition: Backfill, opts: RunOptions, sample: int, as_json: bool
) -> None:
    from orchestrator.dryrun import dry_run

    s = app.resolved_settings()
    db = app.db()
    endpoint = http_endpoint(definition.source)
    client = None if endpoint is None else http_client_for(endpoint, s)
    ctx = SourceContext(db, dict(opts.params), http_client=client)
    scope = combine(definition.query, dict(opts.scope))
    if opts.ids is not None:
        scope = combine(scope, {"_id": {"$in": list(opts.ids)}})
    report = dry_run(db, definition, ctx, sample=min(sample, opts.limit or sample), scope=scope)
    if as_json:
        _json(report.as_dict())
        return
    console.print(f"dry run over {report.sampled:,} documents — nothing written")
    console.print(
        f"  would change {report.changed:,} · unchanged {report.unchanged:,} · "
        f"missing {report.missing:,} · invalid {report.invalid:,}"
    )
    if report.fields_changed:
        console.print(
            "  fields: " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.fields_changed.items()))
        )


def _watch(
    app: AppContext,
    broker: Broker,
    job_id: str,
    *,
    quiet: bool = False,
    stop_when_paused: bool = False,
) -> jobs.JobSummary:
    db = app.db()
    if quiet or not console.is_terminal:
        summary = wait_for(db, broker, app.settings, job_id, stop_when_paused=stop_when_paused)
    else:
        with LiveProgress(console) as bar:
            summary = wait_for(
                db,
                broker,
                app.settings,
                job_id,
                on_tick=bar.update,
                stop_when_paused=stop_when_paused,
            )
    if not quiet:
        console.print(summary_table(summary))
    return summary


@click.command(name="jobs")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def jobs_cmd(app: AppContext, limit: int, as_json: bool) -> None:
    """List backfill jobs, newest first."""
    rows = jobs.list_jobs(app.db(), limit)
    if as_json:
        _json(rows)
    elif rows:
        console.print(jobs_table(rows))
    else:
        console.print("no jobs yet — start one with `backfill run NAME`")


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--watch", is_flag=True, help="Follow with a progress bar until the job ends (also sweeps)."
)
@click.pass_obj
def status(app: AppContext, job_id: str, as_json: bool, watch: bool) -> None:
    """Show a job's progress: batches, documents, rate, ETA, counters."""
    db = app.db()
    if watch:
        summary = _watch(app, _broker(app), job_id, quiet=as_json, stop_when_paused=True)
    else:
        summary = jobs.summarize(db, job_id)
    undo = revert_status(db, summary.job)
    if not as_json and not watch:
        console.print(summary_table(summary))
        for line in recent_lines(summary.job):  # the last changes; --json has them all
            console.print(line, markup=False, highlight=False)
    if not as_json:
        for line in undo.lines(job_id):
            console.print(line, markup=False, highlight=False)
    if as_json:
        _json({**summary.as_dict(), "revert": undo.as_dict()})


@click.command()
@click.argument("job_id")
@click.pass_obj
def pause(app: AppContext, job_id: str) -> None:
    """Stop starting batches; running ones stop at their next checkpoint."""
    job = jobs.pause(app.db(), job_id)
    console.print(f"job {job['_id']} paused")


@click.command()
@click.argument("job_id")
@click.option("--wait/--no-wait", default=False)
@click.pass_obj
def resume(app: AppContext, job_id: str, wait: bool) -> None:
    """Continue a paused job from its checkpoints."""
    broker = _broker(app)
    job = jobs.resume(app.db(), broker.sender, broker.queue, job_id)
    console.print(f"job {job['_id']} {job['status']}")
    if wait:
        _watch(app, broker, job_id)


@click.command()
@click.argument("job_id")
@click.pass_obj
def cancel(app: AppContext, job_id: str) -> None:
    """Stop a job for good (its checkpoints and written data stay)."""
    job = jobs.cancel(app.db(), job_id)
    console.print(f"job {job['_id']} cancelled")


@click.command()
@click.argument("job_id")
@click.option("--wait/--no-wait", default=False)
@click.pass_obj
def retry(app: AppContext, job_id: str, wait: bool) -> None:
    """Re-run failed batches and replay quarantined items as their own job."""
    db = app.db()
    broker = _broker(app)
    report = jobs.retry(
        db,
        broker.sender,
        broker.queue,
        job_id,
        start_replay=replay_starter(db, broker, app.settings),
    )
    console.print(f"job {job_id}: {report.batches_reset} failed batches re-queued")
    if report.replay_job_id:
        console.print(
            f"{report.replayed_items:,} quarantined items replayed as job {report.replay_job_id}"
        )
    if wait:
        if report.batches_reset:
            _watch(app, broker, job_id)
        if report.replay_job_id:
            _watch(app, broker, report.replay_job_id)


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def verify(app: AppContext, job_id: str, as_json: bool) -> None:
    """Recompute every batch's payload hash from its documents; exit 1 on any mismatch."""
    report = verify_job(app.db(), job_id, per_read=app.resolved_settings().read_ids)
    if as_json:
        _json(
            {
                "job_id": report.job_id,
                "batches_checked": report.batches_checked,
                "documents_checked": report.documents_checked,
                "mismatched_batches": report.mismatched_batches,
                "skipped_batches": report.skipped_batches,
                "ok": report.ok,
            }
        )
    elif report.ok:
        console.print(
            f"verified {report.batches_checked:,} batches, {report.documents_checked:,} "
            f"documents: no mismatch"
        )
    else:
        console.print(
            f"[red]{len(report.mismatched_batches)} batches differ from what they wrote:[/] "
            + ", ".join(map(str, report.mismatched_batches[:20]))
        )
    if not report.ok:
        sys.exit(1)


QUARANTINE_SHOWN = 50  # items `backfill quarantine` prints unless --limit says otherwise


@click.command()
@click.argument("job_id")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=None,
    help=f"Items to list (default {QUARANTINE_SHOWN}; with --json, all of them).",
)
@click.option("--json", "as_json", is_flag=True, help="Every item, as one JSON array.")
@click.pass_obj
def quarantine(app: AppContext, job_id: str, limit: int | None, as_json: bool) -> None:
    """List a job's quarantined items (id, reason, error, HTTP status)."""
    db = app.db()
    if as_json:
        _json_array(jobs.iter_quarantined(db, job_id, limit))
        return
    total = jobs.count_quarantined(db, job_id)
    shown = 0
    for item in jobs.iter_quarantined(db, job_id, limit or QUARANTINE_SHOWN):
        shown += 1
        console.print(
            f"{item['item_id']}  {item['reason']}  {item.get('error_class')}  "
            f"{item.get('error', '')[:80]}",
            markup=False,
        )
    more = f" ({total - shown:,} more: --limit N, or --json for all)" if total > shown else ""
    console.print(f"{shown:,} of {total:,} shown{more}")


def _json_array(items: Iterator[Any]) -> None:
    """Write `items` as one JSON array, an item at a time: a job may quarantine millions."""
    first = True
    for item in items:
        body = json.dumps(item, default=str, indent=2).replace("\n", "\n  ")
        click.echo(("[\n  " if first else ",\n  ") + body, nl=False)
        first = False
    click.echo("[]" if first else "\n]")


@click.command()
@click.argument("job_id")
@click.pass_obj
def sweep(app: AppContext, job_id: str) -> None:
    """Re-send batches with expired leases or lost messages, once."""
    from backfill_engine.sweeper import sweep_job

    broker = _broker(app)
    jobs.get_job(app.db(), job_id)
    r = sweep_job(
        app.db(),
        broker.sender,
        broker.queue,
        job_id,
        redispatch_seconds=app.settings.redispatch_seconds,
        broker=broker.redis,
    )
    console.print(
        f"expired leases {r.expired_leases}, lost messages re-sent {r.resent}, "
        f"dispatched {r.dispatched}"
    )


JOB_COMMANDS = [run, jobs_cmd, status, pause, resume, cancel, retry, verify, quarantine, sweep]
__all__ = ["JOB_COMMANDS", "counters_line", "json_array", "print_json", "watch"]
json_array, print_json, watch = _json_array, _json, _watch  # shared with orchestrator.revert_cli
