"""Runner processes against one database: the lock serialises them and survives a crash."""

from __future__ import annotations

import signal
import time

import pytest
from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_migrations import MigrationBlockedError, runner
from tests.migrations.mig_helpers import MigrationDir, effects, start_runner

VERSIONS = ("20240401_one", "20240402_two", "20240403_three")
SLOW = (
    'db.effects.update_one({{"_id": "{v}"}}, {{"$inc": {{"up": 1}}}}, upsert=True)\ntime.sleep(0.4)'
)

# Blocks while a `hold` document exists, so the test decides when the migration may finish.
HELD = (
    'db.control.insert_one({"started": True})\n'
    "while db.control.find_one({'_id': 'hold'}):\n"
    "    time.sleep(0.05)\n"
    'db.effects.update_one({"_id": "20240401_one"}, {"$inc": {"up": 1}}, upsert=True)'
)

DEADLINE_SECONDS = 30.0


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_runner_processes_apply_each_migration_once(
    db: Database, mdir: MigrationDir, settings: Settings
) -> None:
    for v in VERSIONS:
        mdir.add(v, up=SLOW.format(v=v))
    env = {"MIGRATION_LOCK_WAIT": "30", "MIGRATION_LOCK_SECONDS": "5"}
    procs = [start_runner(settings, mdir.path, **env) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    done = sorted(int(out.strip().splitlines()[-1].split()[1]) for out, _ in outputs)
    assert done == [0, 3]  # one runner did everything, the other found nothing left
    assert all(effects(db, v)["up"] == 1 for v in VERSIONS)
    assert {d["state"] for d in db.schema_migrations.find()} == {"applied"}


def test_killed_runners_lock_expires_and_the_next_run_proceeds(
    db: Database, mdir: MigrationDir, settings: Settings
) -> None:
    mdir.add(VERSIONS[0], up=HELD)
    mdir.add(VERSIONS[1])
    db.control.insert_one({"_id": "hold"})
    proc = start_runner(settings, mdir.path, MIGRATION_LOCK_SECONDS="2")
    try:
        wait_for(lambda: db.control.find_one({"started": True}), "the migration to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert db.schema_migrations_lock.find_one({"_id": "lock"}) is not None  # never released
    assert db.schema_migrations.count_documents({"_id": VERSIONS[0], "state": "running"}) == 1

    db.control.delete_many({})
    config = mdir.config(lock_wait_seconds=20)
    # While the dead runner's lease lasts, status cannot tell it from a slow one ...
    report = runner.status(db, config)
    assert report.running == [VERSIONS[0]] or report.failed == [VERSIONS[0]]
    # ... once it expired, the record shows as interrupted ...
    wait_for(lambda: runner.status(db, config).lock_holder is None, "the dead lease to expire")
    report = runner.status(db, config)
    assert report.failed == [VERSIONS[0]] and report.running == []
    with pytest.raises(MigrationBlockedError, match="interrupted"):
        runner.up(db, config)
    # ... and `up --retry` finishes the job.
    result = runner.up(db, config, retry=True)
    assert [s.version for s in result.done] == list(VERSIONS[:2])
    assert effects(db, VERSIONS[0])["up"] == 1
    assert {d["state"] for d in db.schema_migrations.find()} == {"applied"}
