"""`backfill retry`: what a replay job holds, which params and scope it runs with, which key."""

from __future__ import annotations

from typing import Any

import pytest

from backfill_engine.states import METADATA, QUARANTINE
from migrations.versions._catalog import PRODUCTS
from orchestrator import commands, jobs
from orchestrator.commands import replay_starter
from orchestrator.errors import BackfillError
from tests.harness import System, seed_products
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


def test_a_second_retry_during_a_replay_marks_items_only_with_a_job_that_holds_them(
    system: System,
) -> None:
    ids = seed_products(system.db, 12)
    job_id = system.launch(batch_size=4)
    finish_as_workers_would(system.db, job_id)
    quarantine(system.db, job_id, *ids[:3])
    first = _retry(system, job_id)
    assert first.replay_job_id and first.replayed_items == 3
    # No worker runs the replay: it is still active when the job quarantines more.
    quarantine(system.db, job_id, *ids[3:5])

    second = _retry(system, job_id)

    for item in system.db[QUARANTINE].find({"job_id": job_id}):
        if item["replayed"]:
            assert item["item_id"] in planned_ids(system.db, item["replay_job_id"]), (
                f"{item['item_id']} marked replayed by {item['replay_job_id']}, which lacks it"
            )
    assert second.replay_job_id not in (None, first.replay_job_id)
    assert second.replayed_items == 2
    assert system.db[QUARANTINE].count_documents({"job_id": job_id, "replayed": False}) == 0


def test_two_retries_that_pick_the_same_replay_key_never_mark_items_the_job_lacks(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed_products(system.db, 12)
    job_id = system.launch(batch_size=4)
    finish_as_workers_would(system.db, job_id)
    quarantine(system.db, job_id, *ids[:3])
    # As if both retries counted the earlier replays before either created its job.
    monkeypatch.setattr(
        commands, "replay_key", lambda _db, b, src: f"{b}:replay:{src}:1", raising=False
    )
    first = _retry(system, job_id)
    quarantine(system.db, job_id, *ids[3:5])

    with pytest.raises(BackfillError, match=f"another retry of {job_id} is replaying"):
        _retry(system, job_id)

    held = planned_ids(system.db, str(first.replay_job_id))
    for item in system.db[QUARANTINE].find({"job_id": job_id, "replayed": True}):
        assert item["replay_job_id"] == first.replay_job_id and item["item_id"] in held
    unreplayed = system.db[QUARANTINE].find({"job_id": job_id, "replayed": False})
    assert {d["item_id"] for d in unreplayed} == set(ids[3:5])


def test_a_replay_runs_with_the_params_and_scope_of_the_job_it_replays(system: System) -> None:
    ids = seed_regions(system.db, eu=6, us=0)
    job_id = system.launch(
        backfill="gtin14",
        batch_size=4,
        scope=(("region", "EU"),),
        params=(("require_check_digit", True),),
    )
    finish_as_workers_would(system.db, job_id)
    quarantine(system.db, job_id, *ids[:4])
    # Since its run, one quarantined product left the scope: the replay must not touch it.
    system.db[PRODUCTS].update_one({"_id": ids[0]}, {"$set": {"region": "US"}})

    report = _retry(system, job_id)

    assert report.replay_job_id
    replay = jobs.get_job(system.db, report.replay_job_id)
    assert replay["params"].get("require_check_digit") is True
    assert replay["params"].get("replay_of") == job_id
    assert planned_ids(system.db, report.replay_job_id) == ids[1:4]


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


def test_a_run_refuses_to_join_a_slice_an_earlier_release_gave_the_main_key(
    system: System,
) -> None:
    seed_regions(system.db, eu=6, us=6)
    slice_id = system.launch(backfill="gtin14", batch_size=4, scope=(("region", "EU"),))
    # What 27f6f1c's retry left: the slice running under the backfill's own key.
    system.db[METADATA].update_one(
        {"_id": slice_id}, {"$set": {"active_key": "gtin14"}, "$unset": {"exclusive_key": ""}}
    )

    with pytest.raises(BackfillError, match=f"job {slice_id} holds the active key of gtin14"):
        system.launch(backfill="gtin14", batch_size=4)


def test_a_main_job_of_an_earlier_release_is_still_joined(system: System) -> None:
    seed_regions(system.db, eu=6, us=0)
    job_id = system.launch(backfill="gtin14", batch_size=4)
    system.db[METADATA].update_one({"_id": job_id}, {"$unset": {"exclusive_key": ""}})

    assert system.launch(backfill="gtin14", batch_size=4) == job_id
