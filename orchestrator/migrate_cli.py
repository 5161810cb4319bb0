"""`backfill migrate ...`: parse, call a verb in backfill_migrations.runner, print. Nothing else."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from backfill_engine.project import HOW_TO_CONFIGURE, put_on_path
from backfill_engine.schema import ensure_schema, taken_down
from backfill_migrations import runner
from backfill_migrations.errors import NoMigrationsDirError
from backfill_migrations.runner import RunnerConfig, RunResult, StatusReport
from orchestrator.context import AppContext

EXIT_NEEDS_ATTENTION = 3  # status --exit-code: pending, failed, drifted or missing
DIR_ENV = "BACKFILL_MIGRATIONS_DIR"  # read with the settings (backfill_engine/settings.py)
WIDE = 160  # rich's width when not on a terminal, so tables never truncate versions

F = TypeVar("F", bound=Callable[..., Any])

STATE_STYLE = {
    "applied": "green",
    "pending": "yellow",
    "failed": "bold red",
    "running": "magenta",
    "missing": "red",
}


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=WIDE, no_color=True)


def dir_option(fn: F) -> F:
    """--dir: the migrations directory (tests point it at a temporary one)."""
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Migrations directory (default: env {DIR_ENV}, else the project config's "
        "migrations_dir).",
    )(fn)


def migrations_dir(app: AppContext, directory: Path | None) -> Path:
    """--dir, else the settings' (env or project config); NoMigrationsDirError before any I/O.

    Never a default of ours: in a team's project, this project's example migrations would
    otherwise be applied to the team's database.
    """
    if directory is None and app.settings.migrations_dir:
        directory = Path(app.settings.migrations_dir)
    if directory is None:
        raise NoMigrationsDirError(f"{HOW_TO_CONFIGURE}, or pass --dir")
    # The project's migration files import the project's own modules (its backfills).
    put_on_path(app.settings.project_dir)
    return directory


def _config(app: AppContext, directory: Path | None, console: Console) -> RunnerConfig:
    return RunnerConfig.from_settings(
        app.settings,
        directory=migrations_dir(app, directory),
        log=lambda message: console.print(message, highlight=False, markup=False),
        # ctx.settings in a migration gets REDIS_URL etc. filled in (embedded servers if unset).
        settings_factory=app.resolved_settings,
    )


@click.group()
def migrate() -> None:
    """Apply, roll back and inspect schema migrations."""


# --- status -------------------------------------------------------------------------------


def _status_table(report: StatusReport) -> Table:
    table = Table(title="schema migrations", title_justify="left")
    for name in ("version", "state", "applied at", "time", "notes", "description"):
        table.add_column(name, no_wrap=name in ("version", "state", "applied at"))
    for row in report.rows:
        notes = []
        if row.checksum_drift:
            notes.append("checksum drift: file changed after it was applied")
        if row.out_of_order:
            notes.append("out of order (older than the newest applied)")
        if row.state == "missing":
            notes.append("module missing from disk")
        if row.metadata and row.metadata.error and row.state in ("failed", "running"):
            notes.append(row.metadata.error)
        elapsed = row.metadata.execution_time if row.metadata else None
        # Text(), not markup: error messages and descriptions may contain [brackets].
        table.add_row(
            Text(row.version),
            Text(row.state, style=STATE_STYLE.get(row.state, "")),
            f"{row.applied_at:%Y-%m-%d %H:%M:%S}" if row.applied_at else "",
            f"{elapsed:.2f}s" if elapsed is not None and row.applied else "",
            Text("; ".join(notes)),
            Text(row.description),
        )
    return table


def _status_json(report: StatusReport) -> str:
    return json.dumps(
        {
            "migrations": [
                {
                    "version": r.version,
                    "description": r.description,
                    "state": r.state,
                    "applied": r.applied,
                    "applied_at": r.applied_at.isoformat() if r.applied_at else None,
                    "checksum_drift": r.checksum_drift,
                    "out_of_order": r.out_of_order,
                    "execution_time": r.metadata.execution_time if r.metadata else None,
                    "error": r.metadata.error if r.metadata else None,
                }
                for r in report.rows
            ],
            "pending": report.pending,
            "failed": report.failed,
            "drifted": report.drifted,
            "missing": report.missing,
            "needs_attention": report.needs_attention,
            "lock_holder": report.lock_holder,
        },
        default=str,
        indent=2,
    )


@migrate.command("status")
@click.option("--exit-code", is_flag=True, help="Exit 3 when anything is pending/failed/drifted.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@dir_option
@click.pass_obj
def status_cmd(app: AppContext, exit_code: bool, as_json: bool, directory: Path | None) -> None:
    """Show every migration's state, checksum drift and order."""
    console = _console()
    config = _config(app, directory, console)
    report = runner.status(app.db(engine=False), config)
    if as_json:
        click.echo(_status_json(report))
    else:
        console.print(_status_table(report))
        if report.lock_holder:
            h = report.lock_holder
            console.print(f"lock held by {h.get('host')} pid {h.get('pid')}", markup=False)
        summary = (
            f"{len(report.pending)} pending, {len(report.running)} running, "
            f"{len(report.failed)} failed/interrupted, "
            f"{len(report.drifted)} drifted"
        )
        console.print(summary, highlight=False)
    if exit_code and report.needs_attention:
        # sys.exit, not ctx.exit: cli.main() runs click with standalone_mode=False, where
        # click returns an Exit's code instead of raising it, and main() drops the return value.
        sys.exit(EXIT_NEEDS_ATTENTION)


# --- up / down ------------------------------------------------------------------------------


def _print_plan(console: Console, result: RunResult) -> None:
    plan = result.plan
    if plan.steps:
        table = Table(title="plan (dry run: nothing was changed)", title_justify="left")
        for name in ("#", "action", "version", "description"):
            table.add_column(name, no_wrap=name != "description")
        for i, step in enumerate(plan.steps, 1):
            action = "retry" if step.retry else step.direction.value
            table.add_row(str(i), action, Text(step.version), Text(step.description))
        console.print(table)
    else:
        console.print("nothing to do (dry run: nothing was changed)")


def _print_notes(console: Console, result: RunResult) -> None:
    plan = result.plan
    for v in plan.skipped_out_of_order:
        console.print(
            f"skipped {v}: out of order (older than the newest applied); "
            "use --allow-out-of-order to apply it",
            markup=False,
        )
    for v in plan.drifted:
        console.print(f"warning: {v} changed after it was applied (checksum drift)", markup=False)
    for v in plan.missing:
        console.print(f"warning: {v} is applied but its module is missing", markup=False)


@migrate.command("up")
@click.option("--to", "to", metavar="VERSION", help="Apply up to and including VERSION.")
@click.option("--dry-run", is_flag=True, help="Print the plan; touch nothing.")
@click.option("--retry", is_flag=True, help="Re-run a failed or interrupted migration.")
@click.option("--allow-out-of-order", is_flag=True, help="Also apply pending older migrations.")
@dir_option
@click.pass_obj
def up_cmd(
    app: AppContext,
    to: str | None,
    dry_run: bool,
    retry: bool,
    allow_out_of_order: bool,
    directory: Path | None,
) -> None:
    """Apply pending migrations in version order."""
    console = _console()
    config = _config(app, directory, console)
    db = app.db(engine=False)
    if not dry_run and taken_down(db):
        # Moving forward with this release: a database 20240409 took back for the earlier
        # one comes forward first, so a backfill migration ordered before 20240409 (run
        # again after `migrate down`) finds this release's names.
        ensure_schema(db, upgrade_from_down=True)
        console.print("backfill metadata brought forward to this release's schema")
    result = runner.up(
        db,
        config,
        to=to,
        dry_run=dry_run,
        retry=retry,
        allow_out_of_order=allow_out_of_order,
    )
    if dry_run:
        _print_plan(console, result)
    elif not result.done:
        console.print("nothing to apply")
    _print_notes(console, result)


@migrate.command("down")
@click.option("--steps", type=click.IntRange(min=1), help="Roll back the last N (default 1).")
@click.option("--to", "to", metavar="VERSION", help="Roll back everything after VERSION.")
@click.option("--dry-run", is_flag=True, help="Print the plan; touch nothing.")
@dir_option
@click.pass_obj
def down_cmd(
    app: AppContext, steps: int | None, to: str | None, dry_run: bool, directory: Path | None
) -> None:
    """Roll back applied migrations, newest first."""
    if steps is not None and to is not None:
        raise click.UsageError("give --steps or --to, not both")
    console = _console()
    config = _config(app, directory, console)
    result = runner.down(app.db(engine=False), config, steps=steps, to=to, dry_run=dry_run)
    if dry_run:
        _print_plan(console, result)
    elif not result.done:
        console.print("nothing to roll back")
    _print_notes(console, result)


# --- create / mark-applied ------------------------------------------------------------------


@migrate.command("create")
@click.argument("slug")
@click.option("--description", help="One line saying what the migration does.")
@dir_option
@click.pass_obj
def create_cmd(app: AppContext, slug: str, description: str | None, directory: Path | None) -> None:
    """Write a new dated migration module from the template, in the project's directory."""
    path = runner.create(slug, migrations_dir(app, directory), description=description)
    click.echo(f"created {path}")


@migrate.command("mark-applied")
@click.argument("version")
@dir_option
@click.pass_obj
def mark_applied_cmd(app: AppContext, version: str, directory: Path | None) -> None:
    """Record VERSION as applied without running it (after fixing things by hand)."""
    console = _console()
    config = _config(app, directory, console)
    runner.mark_applied(app.db(engine=False), version, config)
