"""Issue 9 hole 5: a catalog that trickles its body must not hold a batch for ever.

Each piece of a trickled body arrives well within BACKFILL_HTTP_READ_TIMEOUT (a per-receive
timeout), the whole body takes far longer. With BACKFILL_HTTP_REQUEST_DEADLINE=2 (an overall
deadline per request) a `backfill pause` during a trickle must release the batch within
seconds, and after `backfill resume` the job must complete (trickled requests time out
and are retried).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.cli import spawn_cli
from tests.faults.issue9 import batches, set_faults
from tests.faults.reconcile import reconcile
from tests.faults.report import record
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

TRICKLE_SECONDS = 60.0  # a trickled body takes this long, 0.1 s a piece
DEADLINE_SECONDS = 2.0
RELEASE_WITHIN_SECONDS = 10.0  # a deadline or two, plus the status recheck


@pytest.mark.timeout(180)
def test_trickling_catalog_is_cut_by_a_request_deadline_and_pause_still_works(
    system: System,
) -> None:
    started = time.monotonic()
    ids = seed_products(system.db, 400)
    set_faults(system, trickle_rate=1.0, trickle_seconds=TRICKLE_SECONDS)
    env = {
        "BACKFILL_HTTP_READ_TIMEOUT": "1",
        "BACKFILL_HTTP_REQUEST_DEADLINE": str(DEADLINE_SECONDS),
        "BACKFILL_SUBCHUNK_SIZE": "50",
    }
    system.start_workers(1, concurrency=2, extra_env=env)
    job_id = system.launch(batch_size=100, max_in_flight=2)
    # A 200 has been answered: its body is trickling now.
    system.wait_until(
        lambda: system.stats()["by_status"].get("200", 0) >= 1, 30, "a trickling answer"
    )
    logs = system.log_dir
    pause = spawn_cli(system, "pause", job_id, log=logs / "pause.log")
    assert pause.wait(timeout=60) == 0, (logs / "pause.log").read_text()
    paused_at = time.monotonic()
    while batches(system, job_id, status="running"):
        held = time.monotonic() - paused_at
        assert held < RELEASE_WITHIN_SECONDS, (
            f"{len(batches(system, job_id, status='running'))} batches still running "
            f"{held:.0f} s after `backfill pause` while the catalog trickles "
            f"({TRICKLE_SECONDS:g} s bodies, BACKFILL_HTTP_REQUEST_DEADLINE={DEADLINE_SECONDS:g})"
        )
        time.sleep(0.2)
    released = time.monotonic() - paused_at

    set_faults(system, trickle_rate=0.3)
    resume = spawn_cli(system, "resume", job_id, log=logs / "resume.log")
    assert resume.wait(timeout=60) == 0, (logs / "resume.log").read_text()
    system.wait(job_id, timeout=90)
    rec = reconcile(system, job_id, ids)
    trickled = system.stats()["by_status"].get("200", 0)
    record(
        "i9-5",
        title="catalog trickles its body",
        fault="catalog bodies trickle in 0.1 s pieces over 60 s (each piece inside the read "
        "timeout)",
        how=f"stand-in trickle_rate 1.0 then 0.3, trickle_seconds {TRICKLE_SECONDS:g}; "
        f"BACKFILL_HTTP_READ_TIMEOUT=1, BACKFILL_HTTP_REQUEST_DEADLINE={DEADLINE_SECONDS:g}; "
        "`backfill pause` during a trickle, then `backfill resume`",
        outcome=f"batches released {released:.1f} s after the pause; {trickled} answers "
        "started, trickled ones cut at the deadline and retried; job completed",
        rec=rec,
        seconds=time.monotonic() - started,
    )
