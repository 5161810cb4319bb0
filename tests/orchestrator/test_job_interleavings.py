"""`resume` and `retry` against a planner or a completion check acting between their steps.

The other party is forced in after the verb's n-th metadata operation, for every n, by
wrapping pymongo's collection methods: every interleaving is run, none is left to timing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo.collection import Collection
from pymongo.database import Database

from backfill_engine.planner import plan_job, start_or_join
from backfill_engine.states import METADATA, QUARANTINE, UNFINISHED_BATCH_STATES
from backfill_engine.store import maybe_complete_job
from migrations.versions._catalog import PRODUCTS
from orchestrator import jobs
from tests.orchestrator.retry_helpers import finish_as_workers_would
from tests.orchestrator.test_planner import RecordingSender

OPERATIONS = ("find_one", "find", "update_one", "update_many", "count_documents", "aggregate")
MOST_STEPS = 8  # more metadata operations than either verb makes before it returns


class Between:
    """Runs `other` right after the n-th operation on backfill_metadata (`every`: and after
    each one that follows)."""

    def __init__(self, at: int | None, other: Callable[[], Any], *, every: bool = False) -> None:
        self.at, self.other, self.every = at, other, every
        self.seen, self.ran, self.busy = 0, 0, False

    def after_operation(self) -> None:
        if self.busy:
            return  # the other party's own operations
        self.seen += 1
        if self.seen == self.at or (self.every and self.at is not None and self.seen > self.at):
            self.busy = True
            try:
                self.other()
                self.ran += 1
            finally:
                self.busy = False


@pytest.fixture
def between(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Between]]:
    installed: list[Between] = []

    def install(at: int | None, other: Callable[[], Any], *, every: bool = False) -> Between:
        hook = Between(at, other, every=every)
        installed.append(hook)
        for name in OPERATIONS:
            original = getattr(Collection, name)

            def wrapped(self: Collection, *a: Any, _orig: Any = original, **kw: Any) -> Any:
                out = _orig(self, *a, **kw)
                if self.name == METADATA:
                    hook.after_operation()
                return out

            monkeypatch.setattr(Collection, name, wrapped)
        return hook

    yield install


def _paused_job(db: Database) -> str:
    db[PRODUCTS].insert_many([{"_id": i} for i in range(10)])
    job, _ = start_or_join(
        db,
        backfill="catalog",
        collection=PRODUCTS,
        batch_size=4,
        max_in_flight=2,
        rate_per_second=10,
    )
    jobs.pause(db, str(job["_id"]))
    return str(job["_id"])


@pytest.mark.parametrize("at", range(1, MOST_STEPS + 1))
def test_resume_racing_the_planners_last_cut_leaves_a_job_something_completes(
    db: Database, between: Callable[..., Between], at: int
) -> None:
    job_id = _paused_job(db)
    hook = between(at, lambda: plan_job(db, RecordingSender(), "q", job_id))

    jobs.resume(db, RecordingSender(), "q", job_id)
    if not hook.ran:  # the planner finishes after resume returned
        plan_job(db, RecordingSender(), "q", job_id)

    job = jobs.get_job(db, job_id)
    assert job["planning"]["done"]
    assert job["status"] == "running", f"{job['status']} with planning done: nothing completes it"


@pytest.mark.parametrize("at", range(1, MOST_STEPS + 1))
@pytest.mark.parametrize("job_state", ["completed_with_errors", "running", "planning"])
def test_retry_with_a_completion_check_after_every_step_never_ends_a_job_with_pending_batches(
    db: Database, between: Callable[..., Between], job_state: str, at: int
) -> None:
    db[PRODUCTS].insert_many([{"_id": i} for i in range(8)])
    job, _ = start_or_join(
        db,
        backfill="catalog",
        collection=PRODUCTS,
        batch_size=4,
        max_in_flight=2,
        rate_per_second=10,
    )
    job_id = str(job["_id"])
    plan_job(db, RecordingSender(), "q", job_id)
    finish_as_workers_would(db, job_id, failed=1)
    if job_state != "completed_with_errors":
        # running: a worker has yet to notice the last batch ended; planning: the planner
        # has cut every batch and has yet to move the job on to running.
        db[METADATA].update_one(
            {"_id": job_id}, {"$set": {"status": job_state, "active_key": "catalog"}}
        )

    def planner_then_completion_check() -> None:
        db[METADATA].update_one(  # the planner's last step, as in plan_job
            {"_id": job_id, "status": "planning"}, {"$set": {"status": "running"}}
        )
        maybe_complete_job(db[METADATA], db[QUARANTINE], job_id)

    hook = between(at, planner_then_completion_check, every=True)

    report = jobs.retry(
        db, RecordingSender(), "q", job_id, start_replay=lambda ids, src: pytest.fail("none")
    )

    assert report.batches_reset == 1
    if not hook.ran:  # the check comes after retry returned
        planner_then_completion_check()
    job = jobs.get_job(db, job_id)
    unfinished = db[METADATA].count_documents(
        {"job_id": job_id, "status": {"$in": [s.value for s in UNFINISHED_BATCH_STATES]}}
    )
    assert unfinished == 1
    assert job["status"] == "running", f"job {job['status']} with a batch still to run"
