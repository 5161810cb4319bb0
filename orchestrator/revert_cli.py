"""CLI verbs for undoing a job: `backfill revert JOB` and `backfill conflicts REVJOB`."""

from __future__ import annotations

import sys
from typing import TextIO

import click
from rich.console import Console

from backfill_engine.revert_conflicts import count_conflicts, iter_conflicts
from backfill_engine.runtime import worker_definitions
from backfill_engine.scope import parse_ids
from orchestrator import jobs
from orchestrator.commands import Broker
from orchestrator.context import AppContext
from orchestrator.errors import BackfillError
from orchestrator.job_cli import EXIT_NOT_COMPLETED, json_array, print_json, watch
from orchestrator.revert import Mode, counts_line, dry_run, mode_for, recompute, revert_status
from orchestrator.revert import revert as start_revert

console = Console()

CONFLICTS_SHOWN = 50  # conflicts `backfill conflicts` prints unless --limit says otherwise


@click.command()
@click.argument("job_id")
@click.option(
    "--dry-run",
    "preview",
    is_flag=True,
    help="Count what would be restored and left; write nothing.",
)
@click.option(
    "--ids-file",
    type=click.File("r"),
    default=None,
    help="Only these documents, one id per line (as `backfill run --ids-file` reads them).",
)
@click.option(
    "--wait/--no-wait", default=False, help="Stay, sweep and show progress until the revert ends."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def revert(
    app: AppContext, job_id: str, preview: bool, ids_file: TextIO | None, wait: bool, as_json: bool
) -> None:
    """Put back exactly what JOB changed; fields changed since are left, listed as conflicts."""
    ids = None if ids_file is None else tuple(parse_ids(ids_file))
    db = app.db()
    target = jobs.get_job(db, job_id)
    mode = mode_for(db, target, worker_definitions(app.settings))
    if mode is Mode.NOTHING:
        _say(
            as_json,
            {"job_id": job_id, "reverted": False},
            f"job {job_id} wrote nothing: nothing to revert",
        )
        return
    if mode is Mode.RECOMPUTE:
        if ids is not None or preview:
            raise BackfillError(
                f"cannot revert job {job_id} with --ids-file or --dry-run: it has no journal, "
                "and the recomputing fallback undoes the whole job"
            )
        counts = recompute(db, target, worker_definitions(app.settings))
        _say(
            as_json,
            {"job_id": job_id, "recomputed": vars(counts)},
            f"job {job_id} has no journal; its backfill is a pure function of one field, so "
            f"the values that still equal what it computes were unset: {counts.restored:,} "
            f"unset, {counts.conflicts:,} kept (their previous values cannot come back)",
        )
        return
    if preview:
        counts = dry_run(db, target, ids)
        _say(
            as_json,
            {"job_id": job_id, "dry_run": True, **vars(counts)},
            f"dry run of reverting {job_id} — nothing written: {counts_line(counts)}",
        )
        return
    broker = Broker.from_settings(app.resolved_settings())
    job, created = start_revert(db, broker, app.settings, job_id, ids=ids)
    revert_id = str(job["_id"])
    if not as_json:
        verb = "started" if created else "joined running"
        console.print(
            f"{verb} revert job [bold]{revert_id}[/] of {job_id} ({job['planning']['batches']:,} "
            f"batches, {job['planning']['items']:,} documents)"
        )
    if not wait:
        if as_json:
            print_json({"job_id": revert_id, "created": created, "status": job["status"]})
        return
    summary = watch(app, broker, revert_id, quiet=as_json)
    undo = revert_status(db, summary.job)
    if as_json:
        print_json({**summary.as_dict(), "revert": undo.as_dict()})
    else:
        for line in undo.lines(revert_id):
            console.print(line, markup=False, highlight=False)
    if summary.job["status"] != "completed":
        sys.exit(EXIT_NOT_COMPLETED)


def _say(as_json: bool, data: dict[str, object], line: str) -> None:
    if as_json:
        print_json(data)
    else:
        console.print(line, markup=False, highlight=False)


@click.command()
@click.argument("job_id")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=None,
    help=f"Conflicts to list (default {CONFLICTS_SHOWN}; with --json, all of them).",
)
@click.option("--json", "as_json", is_flag=True, help="Every conflict, as one JSON array.")
@click.pass_obj
def conflicts(app: AppContext, job_id: str, limit: int | None, as_json: bool) -> None:
    """List the fields a revert job left: before, written and current value of each."""
    db = app.db()
    job = jobs.get_job(db, job_id)
    if not job.get("reverts"):
        raise BackfillError(f"job {job_id} is no revert job; `backfill revert {job_id}` starts one")
    if as_json:
        json_array(iter_conflicts(db, job_id, limit))
        return
    total = count_conflicts(db, job_id)
    shown = 0
    for c in iter_conflicts(db, job_id, limit or CONFLICTS_SHOWN):
        shown += 1
        before = "(absent)" if c.get("before_absent") else repr(c.get("before"))
        current = "(absent)" if c.get("current_absent") else repr(c.get("current"))
        console.print(
            f"{c['item_id']}  {c['field']}  {c['reason']}  before {before[:40]}  "
            f"written {c.get('written')!r:.40}  now {current[:40]}",
            markup=False,
            highlight=False,
        )
    more = f" ({total - shown:,} more: --limit N, or --json for all)" if total > shown else ""
    console.print(f"{shown:,} of {total:,} shown{more}")


REVERT_COMMANDS = [revert, conflicts]
