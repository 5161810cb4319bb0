"""`backfill retry`: a retried job takes back its own active key, never the backfill's main one."""

from __future__ import annotations

from typing import Any

import pytest

from backfill_engine.states import METADATA
from orchestrator import jobs
from orchestrator.commands import replay_starter
from orchestrator.errors import BackfillError
from tests.harness import System
from tests.orchestrator.retry_helpers import (
    finish_as_workers_would,
    planned_ids,
    quarantine,
    seed_regions,
)


def _retry(system: System, job_id: str) -> jobs.RetryReport:
    return jobs.retry(
        system.db,
        system.broker.sender,
        system.settings.queue,
        job_id,
        start_replay=replay_starter(system.db, system.broker, system.settings),
    )


@pytest.mark.parametrize(
    "slice_opts",
    [
        {"scope": (("region", "EU"),)},
        {"limit": 5},
        {"ids": "first five"},
    ],
    ids=["filter", "limit", "ids-file"],
)
def test_a_retried_slice_keeps_its_own_key_and_a_later_run_starts_the_whole_backfill(
    system: System, slice_opts: dict[str, Any]
) -> None:
    ids = seed_regions(system.db, eu=6, us=6)
    if slice_opts.get("ids"):
        slice_opts = {"ids": tuple(ids[:5])}
    slice_id = system.launch(backfill="gtin14", batch_size=4, **slice_opts)
    finish_as_workers_would(system.db, slice_id, failed=1)
    report = _retry(system, slice_id)
    assert report.batches_reset == 1
    assert jobs.get_job(system.db, slice_id)["status"] == "running"

    main_id = system.launch(backfill="gtin14", batch_size=4)

    assert main_id != slice_id, "`backfill run gtin14` joined the retried slice job"
    assert len(planned_ids(system.db, main_id)) == 12


def test_a_retried_replay_keeps_its_own_key(system: System) -> None:
    ids = seed_regions(system.db, eu=6, us=0)
    job_id = system.launch(backfill="gtin14", batch_size=4)
    finish_as_workers_would(system.db, job_id)
    quarantine(system.db, job_id, *ids[:3])
    replay_id = _retry(system, job_id).replay_job_id
    assert replay_id
    finish_as_workers_would(system.db, replay_id, failed=1)
    _retry(system, replay_id)

    main_id = system.launch(backfill="gtin14", batch_size=4)

    assert main_id not in (replay_id, job_id)


def test_a_retried_main_job_still_holds_the_backfills_key(system: System) -> None:
    seed_regions(system.db, eu=6, us=0)
    job_id = system.launch(backfill="gtin14", batch_size=4)
    finish_as_workers_would(system.db, job_id, failed=1)
    _retry(system, job_id)

    assert system.launch(backfill="gtin14", batch_size=4) == job_id  # joins, as before


def test_retry_refused_while_another_main_job_runs_leaves_its_batches_failed(
    system: System,
) -> None:
    seed_regions(system.db, eu=6, us=0)
    job_id = system.launch(backfill="gtin14", batch_size=4)
    finish_as_workers_would(system.db, job_id, failed=1)
    system.launch(backfill="gtin14", batch_size=4)  # a new main job holds the key

    with pytest.raises(BackfillError, match="another gtin14 job is active"):
        _retry(system, job_id)

    statuses = [b["status"] for b in system.db[METADATA].find({"job_id": job_id})]
    assert sorted(statuses) == ["done", "failed"]
    assert jobs.get_job(system.db, job_id)["status"] == "completed_with_errors"
