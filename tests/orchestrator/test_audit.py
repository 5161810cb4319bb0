"""Every command that changes a job leaves who, when, from where and with what on the job."""

from __future__ import annotations

import getpass
import socket
import sys

import pytest
from pymongo.database import Database

from backfill_engine.schema import ensure_schema
from backfill_engine.states import METADATA, JobStatus
from backfill_engine.store import new_job
from orchestrator.audit import redact_argv
from orchestrator.jobs import set_job
from tests.e2e.test_cli_flow import as_json, backfill
from tests.harness import System, seed_products


def test_cli_changes_are_audited_on_the_job(system: System) -> None:
    # No workers: the job stays put between commands, so every verb finds it where we left it.
    seed_products(system.db, 300)
    job_id = as_json(
        backfill(system, "run", "catalog", "--json", "--batch-size", "100", "--max-in-flight", "1")
    )["job_id"]
    assert backfill(system, "pause", job_id).returncode == 0
    assert backfill(system, "resume", job_id).returncode == 0
    # A batch that gave up, so `retry` has something to re-queue.
    system.db[METADATA].update_one(
        {"job_id": job_id, "batch_no": 2}, {"$set": {"status": "failed"}}
    )
    assert backfill(system, "retry", job_id).returncode == 0, "retry refused"
    assert backfill(system, "cancel", job_id).returncode == 0

    trail = as_json(backfill(system, "status", job_id, "--json"))["job"]["audit"]
    assert [e["verb"] for e in trail] == ["run", "pause", "resume", "retry", "cancel"]
    for e in trail:
        assert e["user"] == getpass.getuser() and e["host"] == socket.gethostname() and e["at"]
    for e in trail[1:]:
        assert e["argv"][1:] == [e["verb"], job_id]
    run = trail[0]
    assert " ".join(run["argv"][1:]) == "run catalog --json --batch-size 100 --max-in-flight 1"
    assert run["params"]["batch_size"] == 100 and run["params"]["max_in_flight"] == 1
    assert trail[3]["params"]["batches_reset"] == 1  # retry re-queued the one failed batch

    human = backfill(system, "status", job_id)
    assert human.returncode == 0
    assert f"cancel by {getpass.getuser()}@{socket.gethostname()}" in human.stdout
    assert "run by" in human.stdout  # the last five: all of them here


def test_audited_command_lines_carry_no_credentials() -> None:
    argv = [
        "backfill",
        "run",
        "catalog",
        "--param",
        "api_token=s3cr3t-one",
        "--token",
        "s3cr3t-two",
        "--password=s3cr3t-three",
        "--filter",
        '{"feed": "https://ops:s3cr3t-four@feeds.example/x"}',
    ]
    shown = " ".join(redact_argv(argv))
    assert "s3cr3t" not in shown
    assert shown.startswith("backfill run catalog --param api_token=*** --token ***")


def test_set_is_audited_by_the_one_writer_with_its_verb_and_a_redacted_argv(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A team's deploy script calling the Python API, its own command line carrying secrets.
    ensure_schema(db)
    job = new_job(
        "j-set",
        backfill="catalog",
        key="j-set",
        batch_size=100,
        max_in_flight=4,
        rate_per_second=50.0,
        collection="products",
    )
    db[METADATA].insert_one({**job, "status": JobStatus.RUNNING.value})
    argv = [
        "/opt/ops/bin/deploy-backfill",
        "--token",
        "s3cr3t-one",
        "MONGO_PASSWORD=s3cr3t-two",
        "https://ops:s3cr3t-three@feeds.example/x",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    set_job(db, "j-set", max_in_flight=2)
    entry = db[METADATA].find_one({"_id": "j-set"})["audit"][-1]
    assert entry["verb"] == "set"
    assert entry["params"] == {"max_in_flight": {"from": 4, "to": 2}}
    assert "s3cr3t" not in " ".join(entry["argv"])
    assert entry["argv"][:3] == ["deploy-backfill", "--token", "***"]
    assert entry["user"] and entry["host"] == socket.gethostname() and entry["pid"]


def test_cli_set_is_audited_with_its_verb_and_shown_in_status(system: System) -> None:
    seed_products(system.db, 100)
    job_id = as_json(backfill(system, "run", "catalog", "--json", "--max-in-flight", "1"))["job_id"]
    assert backfill(system, "set", job_id, "--max-in-flight", "3").returncode == 0
    trail = as_json(backfill(system, "status", job_id, "--json"))["job"]["audit"]
    assert [e["verb"] for e in trail] == ["run", "set"]
    assert trail[1]["argv"][1:] == ["set", job_id, "--max-in-flight", "3"]
    assert trail[1]["params"] == {"max_in_flight": {"from": 1, "to": 3}}
    human = backfill(system, "status", job_id).stdout
    assert f"set by {getpass.getuser()}@{socket.gethostname()}" in human
    assert "max_in_flight=1 -> 3" in human
