"""`backfill retry` replays exactly the quarantined items it read, and loses none."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from backfill_engine.batch_io import quarantine_ops
from backfill_engine.planner import start_or_join
from backfill_engine.states import METADATA, QUARANTINE, JobStatus
from orchestrator import jobs
from tests.orchestrator.test_planner import RecordingSender


def _finished_job(db: Database) -> str:
    job, _ = start_or_join(
        db,
        backfill="catalog",
        collection="products",
        batch_size=10,
        max_in_flight=2,
        rate_per_second=10,
    )
    db[METADATA].update_one(
        {"_id": job["_id"]},
        {"$set": {"status": JobStatus.COMPLETED_WITH_ERRORS.value}, "$unset": {"active_key": ""}},
    )
    return str(job["_id"])


def _quarantine(db: Database, job_id: str, *item_ids: Any) -> None:
    """Quarantine items as a worker does, with the worker's own update."""
    entries = [
        {
            "item_id": pid,
            "reason": "invalid",
            "error_class": "InvalidPayloadError",
            "error": "missing field gtin",
            "http_status": 200,
            "payload_snapshot": None,
        }
        for pid in item_ids
    ]
    db[QUARANTINE].bulk_write(quarantine_ops(job_id, 0, entries), ordered=False)


class RacingReplay:
    """Starts a replay job, while a worker quarantines `late` items of the same job."""

    def __init__(self, db: Database, late: list[Any]) -> None:
        self.db, self.late = db, late
        self.replayed: list[list[Any]] = []

    def __call__(self, ids: list[Any], source_job: str) -> str:
        self.replayed.append(list(ids))
        if self.late:
            _quarantine(self.db, source_job, *self.late)
            self.late = []
        return f"replay-{len(self.replayed)}"


def _unreplayed(db: Database, job_id: str) -> set[Any]:
    return {d["item_id"] for d in db[QUARANTINE].find({"job_id": job_id, "replayed": False})}


def test_items_quarantined_during_a_retry_stay_unreplayed(db: Database) -> None:
    job_id = _finished_job(db)
    _quarantine(db, job_id, 1, 2, 3)
    replay = RacingReplay(db, late=[4])

    report = jobs.retry(db, RecordingSender(), "q", job_id, start_replay=replay)

    assert replay.replayed == [[1, 2, 3]]
    assert report.replayed_items == 3
    assert _unreplayed(db, job_id) == {4}, "an item quarantined after the read was dropped"
    marked = db[QUARANTINE].find({"job_id": job_id, "replay_job_id": "replay-1"})
    assert {d["item_id"] for d in marked} == {1, 2, 3}


def test_two_retries_in_a_row_replay_every_item_exactly_once(db: Database) -> None:
    job_id = _finished_job(db)
    _quarantine(db, job_id, 1, 2)
    replay = RacingReplay(db, late=[3, 4])

    jobs.retry(db, RecordingSender(), "q", job_id, start_replay=replay)
    jobs.retry(db, RecordingSender(), "q", job_id, start_replay=replay)

    assert replay.replayed == [[1, 2], [3, 4]]
    assert _unreplayed(db, job_id) == set()


def test_a_retry_is_refused_while_a_revert_runs_or_after_it_ended_not_once_cancelled(
    db: Database,
) -> None:
    from backfill_engine.revert_plan import RetryRefusedError, start_revert

    job_id = _finished_job(db)
    _quarantine(db, job_id, 1, 2)
    target = jobs.get_job(db, job_id)
    revert, _ = start_revert(db, target, max_in_flight=1, batch_size=10)
    replay = RacingReplay(db, late=[])
    for status in ("planning", "running", "paused", "completed", "failed"):
        db[METADATA].update_one({"_id": revert["_id"]}, {"$set": {"status": status}})
        try:
            jobs.retry(db, RecordingSender(), "q", job_id, start_replay=replay)
        except RetryRefusedError as exc:
            assert exc.revert_id == revert["_id"] and exc.status == status
        else:
            raise AssertionError(f"retried while its revert was {status}")
    assert replay.replayed == [] and _unreplayed(db, job_id) == {1, 2}
    db[METADATA].update_one({"_id": revert["_id"]}, {"$set": {"status": "cancelled"}})
    jobs.retry(db, RecordingSender(), "q", job_id, start_replay=replay)
    assert replay.replayed == [[1, 2]]
