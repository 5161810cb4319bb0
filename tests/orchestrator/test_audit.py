"""Every command that changes a job leaves who, when, from where and with what on the job."""

from __future__ import annotations

import getpass
import socket

from backfill_engine.states import METADATA
from orchestrator.audit import redact_argv
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
