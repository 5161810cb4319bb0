"""`backfill revert JOB` runs on real workers and puts back exactly what JOB changed.

The catalog backfill fills products from the stand-in; the revert job then reads the
before-image journal the workers wrote. Whatever the backfill did not write (a brand that
was already right) stays; values the application changed since stay too, listed as
conflicts with what they held before, what the job wrote and what they hold now.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import bson
import pytest

from backfill_engine.journal import JOURNAL, job_batches
from backfill_engine.revert_conflicts import CONFLICTS
from backfill_engine.states import METADATA, QUARANTINE
from catalog_service.data import expected_fields
from migrations.versions._catalog import PRODUCTS
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

WHEN = dt.datetime(2023, 5, 17, 8, 30, 15, 123000)
ENRICHED = ("brand", "category", "gtin", "weight_grams", "catalog_synced_at")


def backfill(system: System, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **system.settings.to_env(), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def typed(value: Any) -> bytes:
    """Type-exact form of a value: int and float, null and absent all differ."""
    return bson.encode({"v": value})


def seed_typed(system: System, n: int = 300) -> tuple[list[Any], dict[Any, dict[str, Any]]]:
    """`n` products; what each holds before the backfill besides `_id` and `sku`."""
    ids = seed_products(system.db, n)
    before: dict[Any, dict[str, Any]] = {}
    for k, pid in enumerate(ids):
        right = expected_fields(str(pid))
        held: dict[str, Any]
        match k % 10:
            case 0 | 1:
                held = {"brand": right["brand"]}  # right already: never written
            case 2:
                held = {"brand": None}  # null, not absent
            case 3:
                held = {"weight_grams": 7}  # an int the backfill overwrites
            case 4:
                held = {"weight_grams": 7.0}  # a double: must not come back as an int
            case 5:
                held = {"brand": {"name": "Old", "tags": ["a", 1]}, "category": ["x", "y"]}
            case 6:
                held = {"gtin": WHEN}
            case _:
                held = {}  # every field absent: absent again after the revert
        if held:
            system.db[PRODUCTS].update_one({"_id": pid}, {"$set": held})
        before[pid] = held
    return ids, before


def held_now(system: System, pid: Any) -> dict[str, bytes]:
    doc = system.db[PRODUCTS].find_one({"_id": pid}) or {}
    return {f: typed(v) for f, v in doc.items() if f not in ("_id", "sku")}


def assert_exactly(system: System, expect: dict[Any, dict[str, Any]]) -> None:
    """Every product holds exactly `expect[pid]` besides `_id` and `sku`, types included."""
    wrong = [
        pid
        for pid, fields in expect.items()
        if held_now(system, pid) != {f: typed(v) for f, v in fields.items()}
    ]
    assert not wrong, f"{len(wrong)} products differ, e.g. {wrong[0]}: {held_now(system, wrong[0])}"


def journaled_fields(system: System, job_id: str) -> int:
    return sum(len(per_doc) for _n, ch in job_batches(system.db, job_id) for per_doc in ch.values())


def test_revert_restores_exactly_and_lists_what_the_application_changed(system: System) -> None:
    ids, before = seed_typed(system)
    system.start_workers(1)
    job_id = system.wait(system.launch()).job["_id"]
    products = system.db[PRODUCTS]
    assert products.count_documents({"catalog_synced_at": {"$exists": True}}) == 300
    changed_fields = journaled_fields(system, job_id)
    # The application edits 50 products after the backfill (an int included).
    app_ids = ids[200:250]
    products.update_many({"_id": {"$in": app_ids}}, {"$set": {"category": "app", "stock": 3}})
    written = products.find_one({"_id": ids[251]}) or {}
    products.update_one({"_id": ids[251]}, {"$set": {"weight_grams": 12}})

    done = as_json(backfill(system, "revert", job_id, "--wait", "--json"))
    revert_id = done["job"]["_id"]
    assert done["job"]["status"] == "completed" and done["job"]["reverts"] == job_id
    counts = done["revert"]
    assert (counts["conflicts"], counts["unrestorable"], counts["already"]) == (51, 0, 0)
    assert counts["restored"] == changed_fields - 51
    expect = {pid: dict(before[pid]) for pid in ids}
    for pid in app_ids:
        expect[pid].update(category="app", stock=3)
    expect[ids[251]] = {**before[ids[251]], "weight_grams": 12}
    assert_exactly(system, expect)
    # The revert journals its own restores (to count them once across deliveries): exactly
    # the fields it put back, nothing that `backfill revert` could ever undo (refused).
    own = sum(len(c) for _n, b in job_batches(system.db, revert_id) for c in b.values())
    assert own == counts["restored"]

    listed = as_json(backfill(system, "conflicts", revert_id, "--json"))
    assert len(listed) == 51
    weight = next(c for c in listed if c["field"] == "weight_grams")
    assert weight["item_id"] == str(ids[251]) and weight["current"] == 12
    assert weight["written"] == written["weight_grams"]
    assert weight["before_absent"] is True and weight["reason"] == "changed"
    category = next(c for c in listed if c["item_id"] == str(ids[207]))
    assert category["current"] == "app" and "before" not in category
    assert category["written"] == expected_fields(str(ids[207]))["category"]
    status = backfill(system, "status", revert_id)
    assert status.returncode == 0, status.stderr
    assert f"reverts job {job_id}" in status.stdout and "conflicts 51" in status.stdout

    # A second revert finds everything as before: it writes nothing.
    again = as_json(backfill(system, "revert", job_id, "--wait", "--json"))
    assert again["job"]["_id"] != revert_id and again["job"]["status"] == "completed"
    assert again["items"]["written"] == 0 and again["revert"]["restored"] == 0
    assert again["revert"]["already"] == changed_fields - 51
    assert_exactly(system, expect)


def test_dry_run_counts_and_writes_nothing_and_ids_file_reverts_only_those(
    system: System, tmp_path: Path
) -> None:
    ids = seed_products(system.db, 200)
    system.start_workers(1)
    job_id = system.wait(system.launch()).job["_id"]
    products = system.db[PRODUCTS]
    products.update_many({"_id": {"$in": ids[:10]}}, {"$set": {"brand": "app"}})
    snapshot = {pid: held_now(system, pid) for pid in ids}

    dry = as_json(backfill(system, "revert", job_id, "--dry-run", "--json"))
    assert (dry["restored"], dry["conflicts"], dry["already"]) == (200 * 5 - 10, 10, 0)
    assert {pid: held_now(system, pid) for pid in ids} == snapshot  # wrote nothing
    assert system.db[METADATA].count_documents({"reverts": job_id}) == 0  # and no job

    chosen = ids[5:35]  # 5 of them edited by the application
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(f"{pid}\n" for pid in chosen))
    dry = as_json(
        backfill(system, "revert", job_id, "--dry-run", "--ids-file", str(ids_file), "--json")
    )
    assert (dry["restored"], dry["conflicts"]) == (30 * 5 - 5, 5)
    done = as_json(
        backfill(system, "revert", job_id, "--ids-file", str(ids_file), "--wait", "--json")
    )
    assert done["job"]["status"] == "completed" and done["items"]["size"] == 30
    assert (done["revert"]["restored"], done["revert"]["conflicts"]) == (30 * 5 - 5, 5)
    for k, pid in enumerate(ids):
        if 5 <= k < 35:
            assert held_now(system, pid) == ({"brand": typed("app")} if k < 10 else {}), k
        else:
            assert held_now(system, pid) == snapshot[pid], k  # not in the file: untouched


def test_reverting_an_older_job_a_newer_one_rewrote_gives_conflicts(system: System) -> None:
    ids = seed_products(system.db, 100)
    system.start_workers(1)
    first = system.wait(system.launch()).job["_id"]
    system.start_catalog("--seed", "1")  # the catalog's answers change: every value differs
    second = system.wait(system.launch())
    assert second.items["written"] == 100
    snapshot = {pid: held_now(system, pid) for pid in ids}
    # The fields the second job changed; the others (a value both seeds give) it left.
    rewritten = {
        (pid, f)
        for _n, ch in job_batches(system.db, second.job["_id"])
        for pid in ch
        for f in ch[pid]
    }
    assert len(rewritten) > 300
    done = as_json(backfill(system, "revert", first, "--wait", "--json"))
    assert done["revert"]["conflicts"] == len(rewritten)
    assert done["revert"]["restored"] == 100 * 5 - len(rewritten)
    assert system.db[CONFLICTS].count_documents({"job_id": done["job"]["_id"]}) == len(rewritten)
    for pid in ids:
        kept = {f: v for f, v in snapshot[pid].items() if (pid, f) in rewritten}
        assert held_now(system, pid) == kept  # the newer job's values stay; the rest go back


def test_pause_resume_and_cancel_a_revert_job(system: System) -> None:
    ids = seed_products(system.db, 150)
    system.start_workers(1)
    job_id = system.wait(system.launch(batch_size=50)).job["_id"]
    system.kill_workers()
    enriched = {pid: held_now(system, pid) for pid in ids}

    # No worker listens: the revert job is planned and waits; pause it before any runs.
    started = as_json(backfill(system, "revert", job_id, "--json"))
    revert_id = started["job_id"]
    assert started["created"] is True
    joined = as_json(backfill(system, "revert", job_id, "--json"))  # a second revert joins it
    assert joined == {**started, "created": False}
    refused = backfill(system, "revert", revert_id)
    assert refused.returncode != 0 and "itself the revert of" in refused.stderr
    assert backfill(system, "pause", revert_id).returncode == 0
    system.start_workers(1)
    paused = system.wait(revert_id, stop_when_paused=True)
    assert paused.job["status"] == "paused"
    pending = {"job_id": revert_id, "kind": "batch", "status": "pending"}
    # The worker took each queued batch, saw the job paused and left it pending.
    system.wait_until(lambda: system.db[METADATA].count_documents(pending) == 3, what="pending")
    assert {pid: held_now(system, pid) for pid in ids} == enriched  # a paused revert writes nothing
    assert backfill(system, "resume", revert_id).returncode == 0
    resumed = system.wait(revert_id)
    assert resumed.job["status"] == "completed" and resumed.batches["done"] == 3
    assert all(held_now(system, pid) == {} for pid in ids)

    # Run the backfill again, then cancel its revert before a worker takes it.
    system.kill_workers()
    system.start_workers(1)
    again = system.wait(system.launch(batch_size=50)).job["_id"]
    system.kill_workers()
    revert_id = as_json(backfill(system, "revert", again, "--json"))["job_id"]
    assert backfill(system, "cancel", revert_id).returncode == 0
    system.start_workers(1)
    cancelled = system.wait(revert_id)
    assert cancelled.job["status"] == "cancelled" and cancelled.items["written"] == 0
    assert all(
        system.db[PRODUCTS].count_documents({"_id": pid, f: {"$exists": True}}) == 1
        for pid in ids[:5]
        for f in ENRICHED
    )
    # The cancelled revert freed its key: a new revert of the same job runs to the end.
    done = as_json(backfill(system, "revert", again, "--wait", "--json"))
    assert done["job"]["_id"] != revert_id and done["job"]["status"] == "completed"
    assert all(held_now(system, pid) == {} for pid in ids)


def test_revert_is_refused_while_the_job_runs(system: System) -> None:
    seed_products(system.db, 50)
    job_id = system.launch()  # no worker takes it: it stays running
    result = backfill(system, "revert", job_id)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"cannot revert job {job_id}: it is still running" in result.stderr
    assert system.db[METADATA].count_documents({"reverts": job_id}) == 0


def test_a_no_journal_run_says_it_cannot_be_reverted_and_revert_refuses(system: System) -> None:
    seed_products(system.db, 120)
    system.start_workers(1)
    done = as_json(backfill(system, "run", "catalog", "--no-journal", "--wait", "--json"))
    job_id = done["job"]["_id"]
    assert done["job"]["journal"] is False and done["items"]["written"] == 120
    assert system.db[JOURNAL].count_documents({"job_id": job_id}) == 0  # workers skipped it
    status = backfill(system, "status", job_id)
    assert "this job cannot be reverted" in status.stdout, status.stdout
    assert as_json(backfill(system, "status", job_id, "--json"))["revert"] == {"revertable": False}

    result = backfill(system, "revert", job_id)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "--no-journal" in result.stderr and f"cannot revert job {job_id}" in result.stderr
    assert system.db[PRODUCTS].count_documents({"brand": {"$exists": True}}) == 120


def test_a_no_journal_pure_function_job_is_reverted_by_recomputing(system: System) -> None:
    ids = seed_products(system.db, 60)
    products = system.db[PRODUCTS]
    for k, pid in enumerate(ids):
        products.update_one({"_id": pid}, {"$set": {"gtin": f"{4006381333931 + k}"}})
    system.start_workers(1)
    done = as_json(backfill(system, "run", "gtin14", "--no-journal", "--wait", "--json"))
    job_id = done["job"]["_id"]
    assert done["items"]["written"] == 60
    products.update_many({"_id": {"$in": ids[:5]}}, {"$set": {"gtin14": "app"}})
    result = backfill(system, "revert", job_id)
    assert result.returncode == 0, result.stderr
    assert "no journal" in result.stdout and "55 unset, 5 kept" in result.stdout, result.stdout
    assert products.count_documents({"gtin14": {"$exists": True}}) == 5


def test_retry_is_refused_while_a_revert_of_the_job_runs_and_once_it_is_done(
    system: System,
) -> None:
    system.start_catalog("--missing-rate", "0.2", "--seed", "3")
    seed_products(system.db, 100)
    system.start_workers(1)
    job_id = system.wait(system.launch(batch_size=50)).job["_id"]
    quarantined = {"job_id": job_id, "replayed": False}
    waiting = system.db[QUARANTINE].count_documents(quarantined)
    assert waiting > 0  # a retry would replay these: write what the revert undid
    system.kill_workers()
    revert_id = as_json(backfill(system, "revert", job_id, "--json"))["job_id"]

    def refused(status: str) -> None:
        result = backfill(system, "retry", job_id)
        assert result.returncode != 0
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
        assert f"cannot retry job {job_id}" in result.stderr
        assert f"revert job {revert_id} {status}" in result.stderr, result.stderr
        assert system.db[QUARANTINE].count_documents(quarantined) == waiting
        assert system.db[METADATA].count_documents({"params.replay_of": job_id}) == 0

    refused("is running")  # no worker has taken it yet
    system.start_workers(1)
    assert system.wait(revert_id).job["status"] == "completed"
    refused("ended completed")
