"""The runner verbs against a real server, with throw-away migration directories."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_migrations import (
    InvalidMigrationError,
    LockLostError,
    LockTimeoutError,
    MigrationBlockedError,
    MigrationFailedError,
    MissingMigrationFileError,
    UnknownTargetError,
    runner,
)
from backfill_migrations.lock import Lease
from tests.migrations.mig_helpers import MigrationDir, effects, snapshot

V1, V2, V3 = "20240401_one", "20240402_two", "20240403_three"


def three(mdir: MigrationDir) -> None:
    for v in (V1, V2, V3):
        mdir.add(v)


def states(db: Database) -> dict[str, str]:
    return {d["_id"]: d["state"] for d in db.schema_migrations.find()}


def test_up_applies_all_in_order_and_records_history(db: Database, mdir: MigrationDir) -> None:
    three(mdir)
    result = runner.up(db, mdir.config())
    assert [s.version for s in result.done] == [V1, V2, V3]
    assert all(effects(db, v) == {"up": 1, "down": 0} for v in (V1, V2, V3))
    doc = db.schema_migrations.find_one({"_id": V2})
    assert doc is not None
    assert doc["state"] == "applied"
    assert doc["description"] == f"test migration {V2}"
    assert doc["checksum"] == hashlib.sha256((mdir.path / f"{V2}.py").read_bytes()).hexdigest()
    assert doc["host"] == socket.gethostname() and doc["pid"] == os.getpid()
    assert doc["execution_time"] >= 0 and doc["applied_at"] is not None
    assert "error" not in doc
    assert runner.up(db, mdir.config()).done == []  # nothing runs twice
    assert effects(db, V1)["up"] == 1
    assert db.schema_migrations_lock.count_documents({}) == 0  # released


def test_up_to_a_target_then_the_rest(db: Database, mdir: MigrationDir) -> None:
    three(mdir)
    assert [s.version for s in runner.up(db, mdir.config(), to=V2).done] == [V1, V2]
    assert states(db) == {V1: "applied", V2: "applied"}
    report = runner.status(db, mdir.config())
    assert report.pending == [V3] and report.needs_attention
    assert [s.version for s in runner.up(db, mdir.config()).done] == [V3]
    assert not runner.status(db, mdir.config()).needs_attention


def test_unknown_target_touches_nothing(db: Database, mdir: MigrationDir) -> None:
    three(mdir)
    with pytest.raises(UnknownTargetError, match="20990101_nope"):
        runner.up(db, mdir.config(), to="20990101_nope")
    assert db.list_collection_names() == []  # refused before taking the lock
    assert states(db) == {}


def test_down_last_steps_and_to(db: Database, mdir: MigrationDir) -> None:
    three(mdir)
    runner.up(db, mdir.config())
    assert [s.version for s in runner.down(db, mdir.config()).done] == [V3]
    assert effects(db, V3) == {"up": 1, "down": 1}
    assert states(db)[V3] == "rolled_back"
    assert runner.status(db, mdir.config()).pending == [V3]
    runner.up(db, mdir.config())
    assert effects(db, V3)["up"] == 2  # rolled back means pending again
    assert [s.version for s in runner.down(db, mdir.config(), to=V1).done] == [V3, V2]
    assert states(db) == {V1: "applied", V2: "rolled_back", V3: "rolled_back"}
    assert [s.version for s in runner.down(db, mdir.config(), steps=5).done] == [V1]
    assert runner.down(db, mdir.config()).done == []
    doc = db.schema_migrations.find_one({"_id": V1})
    assert doc is not None and "applied_at" not in doc


def test_dry_run_up_and_down_change_nothing(db: Database, mdir: MigrationDir) -> None:
    three(mdir)
    before = snapshot(db)
    plan = runner.up(db, mdir.config(), dry_run=True)
    assert plan.dry_run and [s.version for s in plan.plan.steps] == [V1, V2, V3]
    assert plan.done == []
    assert snapshot(db) == before == ([], [], [])

    runner.up(db, mdir.config(), to=V2)
    before = snapshot(db)
    assert [s.version for s in runner.up(db, mdir.config(), dry_run=True).plan.steps] == [V3]
    down_plan = runner.down(db, mdir.config(), steps=2, dry_run=True)
    assert [s.version for s in down_plan.plan.steps] == [V2, V1]
    assert snapshot(db) == before
    assert effects(db, V3) == {"up": 0, "down": 0}
    assert effects(db, V2) == {"up": 1, "down": 0}


def test_checksum_drift_is_flagged_and_mark_applied_rebaselines(
    db: Database, mdir: MigrationDir
) -> None:
    three(mdir)
    runner.up(db, mdir.config())
    assert not runner.status(db, mdir.config()).needs_attention
    path = mdir.path / f"{V2}.py"
    path.write_text(path.read_text() + "\n# edited after it was applied\n")
    report = runner.status(db, mdir.config())
    assert report.drifted == [V2] and report.needs_attention
    assert runner.up(db, mdir.config()).plan.drifted == (V2,)
    assert effects(db, V2)["up"] == 1  # an edited, applied migration never re-runs
    runner.mark_applied(db, V2, mdir.config())
    assert runner.status(db, mdir.config()).drifted == []


def test_crlf_checkout_is_not_drift(db: Database, mdir: MigrationDir) -> None:
    path = mdir.add(V1)
    runner.up(db, mdir.config())
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert runner.status(db, mdir.config()).drifted == []


def test_failed_migration_is_recorded_and_blocks_until_retry(
    db: Database, mdir: MigrationDir
) -> None:
    mdir.add(V1)
    mdir.add(V2, up='raise RuntimeError("boom: mongodb://admin:hunter2@db.example/")')
    mdir.add(V3)
    with pytest.raises(MigrationFailedError, match="boom") as err:
        runner.up(db, mdir.config())
    assert err.value.version == V2 and err.value.done == [V1]
    doc = db.schema_migrations.find_one({"_id": V2})
    assert doc is not None and doc["state"] == "failed"
    assert doc["error"].startswith("RuntimeError: boom")
    assert "hunter2" not in doc["error"]  # credentials never reach history
    assert effects(db, V3)["up"] == 0  # the run stopped at the failure

    report = runner.status(db, mdir.config())
    assert report.failed == [V2] and report.needs_attention
    with pytest.raises(MigrationBlockedError, match=f"{V2} is failed"):
        runner.up(db, mdir.config())

    mdir.add(V2)  # fixed
    result = runner.up(db, mdir.config(), retry=True)
    assert [(s.version, s.retry) for s in result.done] == [(V2, True), (V3, False)]
    assert states(db) == {V1: "applied", V2: "applied", V3: "applied"}
    assert "error" not in (db.schema_migrations.find_one({"_id": V2}) or {})


def test_mark_applied_unblocks_without_running(db: Database, mdir: MigrationDir) -> None:
    mdir.add(V1, up='raise ValueError("needs a hand fix")')
    mdir.add(V2)
    with pytest.raises(MigrationFailedError):
        runner.up(db, mdir.config())
    runner.mark_applied(db, V1, mdir.config())
    doc = db.schema_migrations.find_one({"_id": V1})
    assert doc is not None and doc["state"] == "applied" and doc["manual"] is True
    assert [s.version for s in runner.up(db, mdir.config()).done] == [V2]
    with pytest.raises(UnknownTargetError):
        runner.mark_applied(db, "20990101_nope", mdir.config())


def test_failed_down_is_recorded(db: Database, mdir: MigrationDir) -> None:
    mdir.add(V1, down='raise RuntimeError("cannot undo")')
    runner.up(db, mdir.config())
    with pytest.raises(MigrationFailedError, match="during down"):
        runner.down(db, mdir.config())
    doc = db.schema_migrations.find_one({"_id": V1})
    assert doc is not None and doc["state"] == "failed" and doc["direction"] == "down"


def test_out_of_order_pending_is_reported_and_skipped(db: Database, mdir: MigrationDir) -> None:
    mdir.add(V2)
    runner.up(db, mdir.config())
    mdir.add(V1)  # merged late from another branch
    mdir.add(V3)
    report = runner.status(db, mdir.config())
    assert [r.version for r in report.rows if r.out_of_order] == [V1]
    result = runner.up(db, mdir.config())
    assert result.plan.skipped_out_of_order == (V1,)
    assert [s.version for s in result.done] == [V3]
    assert effects(db, V1)["up"] == 0
    result = runner.up(db, mdir.config(), allow_out_of_order=True)
    assert [s.version for s in result.done] == [V1]


def test_migration_with_ctx_gets_settings_and_log(
    db: Database, mdir: MigrationDir, settings: Settings
) -> None:
    body = (
        'ctx.log("halfway there")\n'
        "ctx.check_lock()\n"
        'db.seen.insert_one({"version": ctx.version, "db": ctx.settings.mongo_db})'
    )
    mdir.add(V1, up=body, ctx=True)
    lines: list[str] = []
    config = runner.RunnerConfig.from_settings(settings, directory=mdir.path, log=lines.append)
    runner.up(db, config)
    assert db.seen.find_one({}, {"_id": 0}) == {"version": V1, "db": settings.mongo_db}
    assert "halfway there" in lines
    assert any(line.startswith(f"applied {V1}") for line in lines)


def test_index_build_says_what_it_waits_for(
    db: Database, mdir: MigrationDir, settings: Settings
) -> None:
    body = (
        'db.things.insert_many([{"n": i} for i in range(50)])\n'
        "from migrations import asc, create_indexes, index\n"
        'create_indexes(db.things, index(asc("n")).name("by_n"))\n'
        'create_indexes(db.things, index(asc("n")).name("by_n"))  # exists: nothing to wait for'
    )
    mdir.add(V1, up=body)
    lines: list[str] = []
    runner.up(
        db, runner.RunnerConfig.from_settings(settings, directory=mdir.path, log=lines.append)
    )
    waits = [line for line in lines if "waiting for the server to build" in line]
    assert waits == ["  waiting for the server to build index by_n on things (50 documents)"]
    assert any(line.startswith("  built index by_n on things") for line in lines), lines


def test_second_runner_times_out_naming_the_holder(db: Database, mdir: MigrationDir) -> None:
    mdir.add(V1)
    holder = Lease(db, lease_seconds=30, wait_seconds=0)
    with holder, pytest.raises(LockTimeoutError) as err:
        runner.up(db, mdir.config(lock_wait_seconds=0.3))
    assert f"{holder.host} pid {holder.pid}" in str(err.value)
    assert effects(db, V1)["up"] == 0


def test_lease_is_renewed_during_a_long_migration(db: Database, mdir: MigrationDir) -> None:
    # The migration outlives two leases, then checks nobody else can take the lock.
    body = (
        "time.sleep(3.5)\n"
        "ctx.check_lock()\n"
        "from backfill_migrations.lock import Lease\n"
        "from backfill_migrations import LockTimeoutError\n"
        "try:\n"
        "    Lease(db, wait_seconds=0).acquire()\n"
        '    db.seen.insert_one({"stolen": True})\n'
        "except LockTimeoutError:\n"
        '    db.seen.insert_one({"stolen": False})'
    )
    mdir.add(V1, up=body, ctx=True)
    runner.up(db, mdir.config(lock_seconds=1.5))
    assert db.seen.find_one({}, {"_id": 0}) == {"stolen": False}
    assert states(db) == {V1: "applied"}


def test_lost_lock_stops_history_writes(db: Database, mdir: MigrationDir) -> None:
    # Simulates another runner taking over (e.g. after a long GC pause): the owner token changes.
    body = 'db.schema_migrations_lock.update_one({"_id": "lock"}, {"$set": {"owner": "thief"}})'
    mdir.add(V1, up=body)
    mdir.add(V2)
    with pytest.raises(LockLostError, match=V1):
        runner.up(db, mdir.config())
    assert states(db) == {V1: "running"}  # left for `up --retry` after a check
    assert effects(db, V2)["up"] == 0


def test_interrupted_record_needs_retry(db: Database, mdir: MigrationDir) -> None:
    three(mdir)
    db.schema_migrations.insert_one({"_id": V1, "state": "running", "checksum": "x"})
    with pytest.raises(MigrationBlockedError, match="interrupted"):
        runner.up(db, mdir.config())
    assert [s.version for s in runner.up(db, mdir.config(), retry=True).done] == [V1, V2, V3]


def test_missing_module_is_reported_and_blocks_its_rollback(
    db: Database, mdir: MigrationDir
) -> None:
    path = mdir.add(V1)
    runner.up(db, mdir.config())
    path.unlink()
    report = runner.status(db, mdir.config())
    assert report.missing == [V1] and report.needs_attention
    with pytest.raises(MissingMigrationFileError, match=V1):
        runner.down(db, mdir.config())


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("2024-04-01_x.py", "", "file name is not a version"),
        ("20240401_x.py", "x = 1\n", "exactly one Migration subclass"),
        ("20240401_x.py", "raise ImportError('nope')\n", "import failed"),
    ],
)
def test_invalid_migration_files_are_named(
    db: Database, mdir: MigrationDir, name: str, text: str, reason: str
) -> None:
    (mdir.path / name).write_text(text)
    with pytest.raises(InvalidMigrationError, match=reason) as err:
        runner.status(db, mdir.config())
    assert name in str(err.value)


def test_version_attribute_must_match_file_name(db: Database, mdir: MigrationDir) -> None:
    path = mdir.add(V1)
    path.rename(mdir.path / f"{V2}.py")
    with pytest.raises(InvalidMigrationError, match="does not match the file name"):
        runner.status(db, mdir.config())


def test_helper_modules_starting_with_underscore_are_skipped(
    db: Database, mdir: MigrationDir
) -> None:
    (mdir.path / "_shared.py").write_text("VALUE = 1\n")
    mdir.add(V1)
    assert [r.version for r in runner.status(db, mdir.config()).rows] == [V1]


def test_create_writes_a_loadable_module(db: Database, mdir: MigrationDir) -> None:
    import datetime as dt

    path = runner.create("add_things", mdir.path, today=dt.date(2024, 5, 1))
    assert path.name == "20240501_add_things.py"
    report = runner.status(db, mdir.config())
    assert [(r.version, r.state) for r in report.rows] == [("20240501_add_things", "pending")]
    with pytest.raises(MigrationFailedError, match="NotImplementedError"):
        runner.up(db, mdir.config())


def test_from_settings_takes_lock_timings(settings: Settings) -> None:
    s = replace(settings, migration_lock_seconds=7.0, migration_lock_wait_seconds=3.0)
    config = runner.RunnerConfig.from_settings(s)
    assert (config.lock_seconds, config.lock_wait_seconds) == (7.0, 3.0)
    assert config.directory == Path(settings.migrations_dir or "")
