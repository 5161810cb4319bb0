"""`backfill jobs` and `backfill status` read well in an 80-column terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from rich.console import Console, Group

from orchestrator.jobs import JobSummary
from orchestrator.progress import LiveProgress
from tests.harness import System, seed_products

WIDTH = 80
JOBS_HEADERS = ("job", "status", "batches", "documents")


def backfill(system: System, *args: str) -> str:
    env = {**os.environ, **system.settings.to_env(), "COLUMNS": str(WIDTH)}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_fits(text: str) -> None:
    wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not wide, f"lines over {WIDTH} columns: {wide}"
    assert "…" not in text, f"something was cut:\n{text}"


def test_jobs_and_status_fit_80_columns_with_every_header_whole(system: System) -> None:
    seed_products(system.db, 450)
    job_id = system.launch(batch_size=100)  # no workers: it stays running, which is enough

    listing = backfill(system, "jobs")
    assert_fits(listing)
    header = listing.splitlines()[0].split()
    assert header == list(JOBS_HEADERS)
    assert job_id in listing  # the id is whole, so it can be pasted into the next command

    status = backfill(system, "status", job_id)
    assert_fits(status)
    for label in ("job", "status", "planned", "batches", "documents", "items"):
        assert any(line.split()[:1] == [label] for line in status.splitlines()), label
    assert job_id in status and "quarantined 0" in status


def test_the_watch_progress_keeps_id_counts_and_counters_whole_at_80_columns() -> None:
    # The renderer is pure: it draws whatever summary it is given.
    job_id = "catalog-20240405-120000-ab12"
    summary = JobSummary(
        job={"_id": job_id, "status": "running", "planning": {"items": 10_000_000}},
        batches={"running": 8, "done": 18_000},
        items={"size": 10_000_000, "processed": 9_050_000, "written": 9_000_000},
        quarantined=1_000,
    )
    console = Console(width=WIDTH, file=io.StringIO(), force_terminal=False)
    bar = LiveProgress(console)
    bar.update(summary)
    console.print(Group(*bar.progress.get_renderables()))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert_fits(text)
    assert job_id in text and "9,050,000/10,000,000" in text
    assert "quarantined 1,000" in text and "written 9,000,000" in text
