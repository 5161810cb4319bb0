"""`backfill quarantine JOB`: --json gives every item; the paged text says how many more exist."""

from __future__ import annotations

import json
import subprocess
import sys

from backfill_engine.planner import start_or_join
from migrations.versions._catalog import PRODUCTS
from tests.faults.cli import ROOT, cli_env
from tests.harness import System
from tests.orchestrator.retry_helpers import quarantine

CLI_TIMEOUT = 60


def _cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=cli_env(system),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=ROOT,
    )


def _job_with_quarantined(system: System, n: int) -> str:
    job, _ = start_or_join(
        system.db,
        backfill="catalog",
        collection=PRODUCTS,
        batch_size=10,
        max_in_flight=2,
        rate_per_second=10,
    )
    quarantine(system.db, str(job["_id"]), *range(n))
    return str(job["_id"])


def test_quarantine_json_lists_every_item(system: System) -> None:
    job_id = _job_with_quarantined(system, 120)

    proc = _cli(system, "quarantine", job_id, "--json")

    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    assert sorted(i["item_id"] for i in items) == list(range(120))


def test_quarantine_text_says_how_many_more_there_are(system: System) -> None:
    job_id = _job_with_quarantined(system, 120)

    proc = _cli(system, "quarantine", job_id)

    assert proc.returncode == 0, proc.stderr
    assert "50 of 120 shown" in proc.stdout
