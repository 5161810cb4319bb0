"""`backfill set JOB ...`: tune a running or paused job (rate, in-flight cap, batch size)."""

from __future__ import annotations

import click
from rich.console import Console

from orchestrator import jobs
from orchestrator.context import AppContext
from orchestrator.errors import BackfillError
from orchestrator.rates import parse_rate

console = Console()


def _rate_text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Refused like `run --rate` (usage error, exit 2) before any server is asked.
    if value is not None:
        try:
            parse_rate(value)
        except BackfillError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@click.command(name="set")
@click.argument("job_id")
@click.option("--rate", callback=_rate_text, help="50/s, auto or auto:CEIL (e.g. auto:200/s).")
@click.option("--max-in-flight", type=int, default=None, help="Batches queued or running at once.")
@click.option("--batch-size", type=int, default=None, help="Ids per batch planned from now on.")
@click.pass_obj
def set_cmd(
    app: AppContext,
    job_id: str,
    rate: str | None,
    max_in_flight: int | None,
    batch_size: int | None,
) -> None:
    """Change a running or paused job; workers pick it up within a sweep interval."""
    job, change = jobs.tune(
        app.db(), job_id, rate=rate, max_in_flight=max_in_flight, batch_size=batch_size
    )
    said = ", ".join(f"{k} {v['from']} -> {v['to']}" for k, v in change.items())
    console.print(f"job {job['_id']}: {said}", markup=False)


TUNE_COMMANDS = [set_cmd]
