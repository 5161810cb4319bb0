"""`backfill set`: a running job's in-flight cap, rate and batch size change under real workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backfill_engine.runtime import worker_definitions
from orchestrator.commands import RunOptions, launch
from orchestrator.jobs import set_job
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

SLOW = {"BACKFILL_SUBCHUNK_SIZE": "10"}


def _done(system: System, job_id: str) -> int:
    return system.db.backfill_metadata.count_documents({"job_id": job_id, "status": "done"})


def _in_flight(system: System, job_id: str) -> int:
    return system.db.backfill_metadata.count_documents(
        {"job_id": job_id, "status": {"$in": ["queued", "running"]}}
    )


def _running(system: System, job_id: str) -> int:
    return system.db.backfill_metadata.count_documents({"job_id": job_id, "status": "running"})


def test_set_max_in_flight_caps_batches_thereafter(system: System) -> None:
    system.start_catalog("--latency-ms", "30")
    # 30 batches: a few finish before the cap changes, eight run one at a time after it.
    seed_products(system.db, 1500)
    job_id = system.launch(batch_size=50, max_in_flight=4)  # planned before workers start
    system.start_workers(2, concurrency=2, extra_env=SLOW)
    system.wait_until(lambda: _in_flight(system, job_id) >= 3, what="several batches in flight")
    set_job(system.db, job_id, max_in_flight=1)
    # Batches already running finish; from then on one at a time.
    system.wait_until(lambda: _in_flight(system, job_id) <= 1, what="in-flight drained to 1")
    # Eight batches in a row, each dispatched after the cap changed: never two running at
    # once. (A finishing batch claims its successor before it is done, backfill_engine.handoff,
    # so queued plus running may briefly be two; the successor starts after the finish.)
    done_at_drain = _done(system, job_id)
    most = 0
    while _done(system, job_id) < done_at_drain + 8:
        assert system.summary(job_id).job["status"] == "running"
        most = max(most, _running(system, job_id))
    assert most == 1
    set_job(system.db, job_id, max_in_flight=8)  # and finish quickly
    assert system.wait(job_id).job["status"] == "completed"
    first, second = system.summary(job_id).job["audit"][-2:]
    assert first["verb"] == second["verb"] == "set"
    assert first["params"] == {"max_in_flight": {"from": 4, "to": 1}}
    assert second["params"] == {"max_in_flight": {"from": 1, "to": 8}}
    assert first["user"] and first["host"] and first["argv"]


@pytest.mark.timing  # an observed rate: away from the parallel phase, so its load does not bend it
def test_set_rate_changes_the_observed_request_rate(system: System) -> None:
    seed_products(system.db, 1600)  # 160 requests: seconds at the first rate
    # Planned before any worker starts: launch plans to the end, and must not race the job.
    job_id = system.launch(batch_size=20, max_in_flight=4, rate_per_second=40.0)
    system.start_workers(2, concurrency=2, extra_env=SLOW)
    system.wait_until(lambda: system.stats()["max_rate_1s"] > 10, what="a fast start")
    set_job(system.db, job_id, rate="5/s")
    started = {
        d["_id"] for d in system.db.backfill_metadata.find({"job_id": job_id, "status": "running"})
    }
    # Batches that started before the change finish at the old rate; then measure.
    system.wait_until(
        lambda: (
            system.db.backfill_metadata.count_documents(
                {"_id": {"$in": list(started)}, "status": "running"}
            )
            == 0
        ),
        what="batches started before the change to finish",
    )
    system.reset_stats()
    system.wait_until(lambda: system.stats()["requests"] >= 15, what="requests at the new rate")
    assert system.stats()["max_rate_1s"] <= 6
    assert system.summary(job_id).job["rate_per_second"] == 5.0
    set_job(system.db, job_id, rate=2000.0)  # and finish quickly
    assert system.wait(job_id).job["status"] == "completed"


def test_set_batch_size_applies_to_batches_planned_after_it(system: System) -> None:
    seed_products(system.db, 1000)
    system.start_workers(1, concurrency=2)
    meta = system.db.backfill_metadata

    def on_batch(batches: int, _products: int) -> None:
        # The planner has written its first two groups of cuts (batch 0, then 1-2):
        # change the size mid-plan; it applies from the next group.
        if batches == 3:
            job = meta.find_one({"kind": "job", "status": {"$in": ["planning", "running"]}})
            assert job is not None
            set_job(system.db, str(job["_id"]), batch_size=50)

    opts = RunOptions(backfill="catalog", batch_size=100, max_in_flight=4, rate_per_second=2000.0)
    definitions = worker_definitions(system.settings)
    job, _ = launch(system.db, system.broker, opts, on_batch=on_batch, definitions=definitions)
    assert system.wait(str(job["_id"])).job["status"] == "completed"
    batches = meta.find({"job_id": job["_id"], "kind": "batch"}).sort("batch_no", 1)
    sizes = [d["size"] for d in batches]
    assert sizes == [100, 100, 100] + [50] * 14


def _cli(system: System, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "MONGO_"))}
    env = {**base, **system.settings.to_env(), "BACKFILL_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_set_refuses_bad_values_and_finished_jobs_in_one_line(
    system: System, tmp_path: Path
) -> None:
    seed_products(system.db, 50)
    system.start_workers(1, concurrency=1)
    job_id = system.launch(batch_size=50)
    assert system.wait(job_id).job["status"] == "completed"
    cases = [
        (["--max-in-flight", "0"], "--max-in-flight must be between 1 and", 1),
        (["--batch-size", "-1"], "--batch-size must be between 1 and", 1),
        (["--rate", "fast"], "not a rate like 50/s", 2),
        (["--rate", "auto:0/s"], "rate must be above 0", 2),
        ([], "nothing to change", 1),
        (["--max-in-flight", "2"], f"cannot set job {job_id}: it is completed", 1),
        (["--rate", "auto"], f"cannot set job {job_id}: it is completed", 1),
    ]
    for args, mentions, code in cases:
        proc = _cli(system, tmp_path, "set", job_id, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == code, (args, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, proc.stderr)
        assert mentions.lower() in lines[0].lower(), (args, lines[0])
    audit = system.summary(job_id).job.get("audit", [])
    assert [e["verb"] for e in audit] == ["run"]  # no refused `set` is audited
    proc = _cli(system, tmp_path, "set", "no-such-job", "--rate", "5/s")
    assert proc.returncode == 1 and "no backfill job" in proc.stderr


def test_status_shows_the_rate_and_the_last_changes(system: System, tmp_path: Path) -> None:
    seed_products(system.db, 300)
    system.start_catalog("--latency-ms", "50")
    job_id = system.launch(batch_size=100, max_in_flight=2)  # no workers: it stays running
    proc = _cli(system, tmp_path, "set", job_id, "--rate", "auto:30/s", "--batch-size", "80")
    assert proc.returncode == 0, proc.stderr
    out = _cli(system, tmp_path, "status", job_id).stdout
    assert "auto" in out and "ceiling 30/s" in out, out
    assert "batch_size 100 → 80" in out and "rate 2000/s →" in out, out  # who and what changed
    assert "@" in out.split("changed", 1)[1], out  # user@host of the change
