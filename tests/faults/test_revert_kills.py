"""Workers SIGKILLed around the journal: a revert still ends with every document as before.

A team hook (BACKFILL_HOOKS) whose `before_write` SIGKILLs its own worker process once, at
a chosen call: after the before-images are recorded and before the product write. Killed
mid-revert, the revert batch is taken over and finishes from its checkpoint; killed
mid-backfill, the journal holds that batch's entries under two tokens (the killed
delivery's and the one that took over), the backfill completes on another worker, and its
revert must still restore exactly.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from backfill_engine.journal import JOURNAL, job_batches
from backfill_engine.revert_plan import revert_totals
from backfill_engine.states import METADATA
from orchestrator.revert import revert
from tests.e2e.test_revert import held_now, seed_typed, typed
from tests.faults.reconcile import reconcile
from tests.faults.report import record
from tests.harness import System

pytestmark = pytest.mark.e2e

KILL_HOOK = """
import fcntl
import os
import signal

from backfill_engine.hooks import BatchHook


class KillOnce(BatchHook):
    \"\"\"SIGKILL this process at a matching job's batch's KILL_AT-th before_write, once
    in all: never at a batch's first sub-chunk, so the killed delivery journaled and wrote
    earlier sub-chunks under its own token.\"\"\"

    def before_write(self, batch, n_ops):
        if os.environ.get("KILL_WHEN", "before_write") == "before_write":
            self.maybe_kill(batch)

    def after_write(self, batch, seconds, ok):
        # After the product write, before its checkpoint: the next delivery redoes it.
        if os.environ.get("KILL_WHEN") == "after_write":
            self.maybe_kill(batch)

    def maybe_kill(self, batch):
        reverting = "-revert-" in batch.job_id
        if reverting != (os.environ["KILL_IN"] == "revert"):
            return
        base = os.environ["KILL_DIR"]
        me = f"{batch.job_id} {batch.batch_no}"
        killed = os.path.join(base, "killed")
        with open(os.path.join(base, "calls"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(me + "\\n")
            fh.flush()
            fh.seek(0)
            calls = fh.read().splitlines().count(me)
            if calls != int(os.environ["KILL_AT"]) or os.path.exists(killed):
                return
            with open(killed, "w") as out:
                out.write(f"{batch.batch_no}")
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _workers_with_kill_hook(
    system: System, tmp_path: Path, kill_in: str, kill_at: int, when: str = "before_write"
) -> Path:
    """Two workers whose hook kills its process once; the directory holding its marks."""
    code = tmp_path / "kill_code"
    code.mkdir()
    (code / "kill_hooks.py").write_text(textwrap.dedent(KILL_HOOK))
    marks = tmp_path / "marks"
    marks.mkdir()
    system.settings = replace(system.settings, hooks=("kill_hooks:KillOnce",), subchunk_size=25)
    env = {
        "PYTHONPATH": str(code),
        "KILL_DIR": str(marks),
        "KILL_IN": kill_in,
        "KILL_AT": str(kill_at),
        "KILL_WHEN": when,
    }
    system.start_workers(2, concurrency=1, extra_env=env)
    return marks


def _exactly_before(system: System, before: dict[Any, dict[str, Any]]) -> list[Any]:
    """The products not holding exactly what they held before the backfill."""
    return [
        pid
        for pid, held in before.items()
        if held_now(system, pid) != {f: typed(v) for f, v in held.items()}
    ]


@pytest.mark.parametrize("when", ["before_write", "after_write"])
def test_worker_killed_mid_revert_leaves_every_document_as_before(
    system: System, tmp_path: Path, when: str
) -> None:
    started = time.monotonic()
    ids, before = seed_typed(system, 300)
    marks = _workers_with_kill_hook(system, tmp_path, "revert", kill_at=3, when=when)
    job_id = system.wait(system.launch(batch_size=150)).job["_id"]
    assert not (marks / "killed").exists()

    revert_job, _ = revert(system.db, system.broker, system.settings, job_id)
    revert_id = str(revert_job["_id"])
    done = system.wait(revert_id)
    assert (marks / "killed").exists(), "the hook never killed a worker: nothing was tested"
    killed_batch = int((marks / "killed").read_text())
    assert done.job["status"] == "completed"
    batch = system.db[METADATA].find_one({"job_id": revert_id, "batch_no": killed_batch}) or {}
    assert batch["attempts"] >= 2 and batch["processed"] == batch["size"]
    wrong = _exactly_before(system, before)
    assert not wrong, f"{len(wrong)} products differ after the revert, e.g. {wrong[0]}"
    counts = batch["counters"]
    # Exact counts whatever the kill hit: every field value the backfill changed is counted
    # once, restored (put back by this revert, by either delivery) or already as before.
    changed = sum(len(c) for _n, b in job_batches(system.db, job_id) for c in b.values())
    totals = revert_totals(system.db, revert_id)
    assert totals["conflicts"] == totals["unrestorable"] == 0
    assert totals["restored"] + totals["already"] == changed
    assert totals["already"] == 0, totals  # nothing was as before but what this revert put back
    if when == "after_write":
        return  # revert-1 records the before_write case
    record(
        "revert-1",
        title="worker SIGKILLed mid-revert",
        fault="`kill -9` of the worker process running a revert batch, mid-batch",
        how="BACKFILL_HOOKS hook SIGKILLs its own process at the revert's 3rd before_write "
        "(sub-chunks of 25); the lease expires, the sweeper re-queues, another delivery "
        "finishes the batch from its checkpoint",
        outcome=f"revert batch {killed_batch} took {batch['attempts']} attempts "
        f"(restored {counts['restored']}, already {counts['already']} on its re-run); "
        f"{len(ids) - len(wrong)} of {len(ids)} products exactly as before the backfill",
        products=len(ids),
        lost=len(wrong),
        status=done.job["status"],
        seconds=time.monotonic() - started,
    )


def test_worker_killed_between_journal_and_write_then_revert_restores_exactly(
    system: System, tmp_path: Path
) -> None:
    started = time.monotonic()
    ids, before = seed_typed(system, 300)
    marks = _workers_with_kill_hook(system, tmp_path, "backfill", kill_at=2)
    job_id = system.wait(system.launch(batch_size=150)).job["_id"]
    assert (marks / "killed").exists(), "the hook never killed a worker: nothing was tested"
    killed_batch = int((marks / "killed").read_text())
    # The killed delivery's before-images are journaled, its write never landed; the
    # delivery that took over journaled the same documents again under a newer token.
    tokens = system.db[JOURNAL].distinct("token", {"job_id": job_id, "batch_no": killed_batch})
    assert len(tokens) >= 2, tokens
    rec = reconcile(system, job_id, ids, count_refetches=False)

    revert_job, _ = revert(system.db, system.broker, system.settings, job_id)
    done = system.wait(str(revert_job["_id"]))
    assert done.job["status"] == "completed"
    wrong = _exactly_before(system, before)
    assert not wrong, f"{len(wrong)} products differ after the revert, e.g. {wrong[0]}"
    record(
        "revert-2",
        title="worker SIGKILLed between before-image and write, then revert",
        fault="`kill -9` of a backfill worker after its journal insert, before its product write",
        how="BACKFILL_HOOKS hook SIGKILLs its own process at the backfill's 2nd before_write; "
        "the batch completes on another delivery, then `backfill revert` runs on the workers",
        outcome=f"batch {killed_batch} journaled under {len(tokens)} tokens; backfill "
        f"reconciled, then {len(ids) - len(wrong)} of {len(ids)} products exactly as before",
        rec=rec,
        seconds=time.monotonic() - started,
    )
