"""Every CLI verb given wrong input: one `error:` line, non-zero exit, no traceback, no write.

The CLI runs as a real subprocess (`python -m orchestrator.cli`) against the session's
SecantusDB and Redis, so what is checked is exactly what an operator would see.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
import redis
from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_migrations import runner
from catalog_service.scenario import start_catalog
from orchestrator.stack import ManagedProcess, free_port
from tests.harness import METADATA_VERSION, seed_products

CATALOG_TOKEN = "tok-Very-Secret-4711"
MONGO_PASSWORD = "mongo-Pw-Secret-0815"
REDIS_PASSWORD = "redis-Pw-Secret-1234"
CLI_TIMEOUT = 120.0


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A catalog stand-in that demands a token."""
    proc = start_catalog(log_dir=tmp_path / "logs", token=CATALOG_TOKEN)
    yield proc
    proc.stop()


@pytest.fixture
def env(
    settings: Settings, db: Database, catalog: ManagedProcess, tmp_path: Path
) -> dict[str, str]:
    """A working environment over a database with products and backfill_metadata applied."""
    seed_products(db, 50)
    runner.up(
        db, runner.RunnerConfig.from_settings(settings, log=lambda m: None), to=METADATA_VERSION
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "MONGO_"))}
    return {
        **base,
        **settings.to_env(),
        "CATALOG_URL": catalog.url,
        "CATALOG_TOKEN": CATALOG_TOKEN,
        "BACKFILL_DATA_DIR": str(tmp_path / "data"),
    }


def snapshot(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every document of every collection: the proof that nothing was written."""
    return {
        name: list(db[name].find().sort("_id", 1)) for name in sorted(db.list_collection_names())
    }


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=Path(__file__).resolve().parents[2],
    )


def assert_one_line_refusal(
    proc: subprocess.CompletedProcess[str], *, mentions: str, secrets: tuple[str, ...] = ()
) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line: {proc.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert mentions.lower() in lines[0].lower(), lines[0]
    for secret in (CATALOG_TOKEN, MONGO_PASSWORD, REDIS_PASSWORD, *secrets):
        assert secret not in output, f"secret leaked: {output!r}"


def assert_nothing_written(
    before: dict[str, list[dict[str, Any]]], db: Database, settings: Settings
) -> None:
    assert snapshot(db) == before
    assert settings.redis_url
    assert redis.Redis.from_url(settings.redis_url).llen(settings.queue) == 0


JOB_VERBS = ["status", "pause", "resume", "cancel", "retry", "verify", "quarantine", "sweep"]


@pytest.mark.parametrize("verb", JOB_VERBS)
def test_unknown_job_id_is_refused_by_every_job_verb(
    verb: str, env: dict[str, str], db: Database, settings: Settings
) -> None:
    before = snapshot(db)
    proc = run_cli(env, verb, "catalog-19990101-000000-dead")
    assert_one_line_refusal(proc, mentions="no backfill job 'catalog-19990101-000000-dead'")
    assert proc.returncode == 1
    assert_nothing_written(before, db, settings)


@pytest.mark.parametrize(
    ("args", "mentions", "code"),
    [
        (["run", "catalog", "--batch-size", "0"], "--batch-size must be between 1 and", 1),
        (["run", "catalog", "--batch-size", "-1"], "--batch-size must be between 1 and", 1),
        (["run", "catalog", "--batch-size", str(10**9)], "got 1000000000", 1),
        (["run", "catalog", "--batch-size", "many"], "not a valid integer", 2),
        (["run", "catalog", "--rate", "0"], "rate must be above 0", 2),
        (["run", "catalog", "--rate", "-5/s"], "rate must be above 0", 2),
        (["run", "catalog", "--rate", "fast"], "not a rate like 50/s", 2),
        (["run", "catalog", "--max-in-flight", "0"], "--max-in-flight must be between", 1),
        (["run", "no_such_backfill"], "unknown backfill 'no_such_backfill'", 1),
        (["run", "catalog", "--dry-run", "--sample", "0"], "--sample", 2),
        (["migrate", "up", "--to", "20991231_no_such_migration"], "unknown migration version", 1),
        (["migrate", "up", "--to", "not-a-version"], "unknown migration version", 1),
        (["migrate", "down", "--to", "garbage"], "unknown migration version", 1),
        (["migrate", "down", "--steps", "1", "--to", "x"], "not both", 2),
        (["status"], "missing argument 'job_id'", 2),
        (["jobs", "--limit", "0"], "--limit", 2),
        (["no-such-verb"], "no such command", 2),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_wrong_arguments_give_one_line_and_write_nothing(
    args: list[str],
    mentions: str,
    code: int,
    env: dict[str, str],
    db: Database,
    settings: Settings,
) -> None:
    before = snapshot(db)
    proc = run_cli(env, *args)
    assert_one_line_refusal(proc, mentions=mentions)
    assert proc.returncode == code
    assert_nothing_written(before, db, settings)


@pytest.mark.parametrize(
    ("variable", "value", "mentions"),
    [
        ("BACKFILL_BATCH_SIZE", "0", "BACKFILL_BATCH_SIZE must be between"),
        ("BACKFILL_RATE", "zero", "BACKFILL_RATE must be a number"),
        ("MONGO_URL", f"http://admin:{MONGO_PASSWORD}@db.example", "MONGO_URL must start with"),
        ("REDIS_URL", f"http://:{REDIS_PASSWORD}@cache.example", "REDIS_URL must start with"),
    ],
)
def test_bad_environment_variable_is_named_in_one_line(
    variable: str,
    value: str,
    mentions: str,
    env: dict[str, str],
    db: Database,
    settings: Settings,
) -> None:
    before = snapshot(db)
    proc = run_cli({**env, variable: value}, "run", "catalog")
    assert_one_line_refusal(proc, mentions=mentions)
    assert_nothing_written(before, db, settings)


@pytest.mark.parametrize("args", [["jobs"], ["run", "catalog"], ["migrate", "up"]])
def test_unreachable_mongo_is_one_line_with_the_password_redacted(
    args: list[str], env: dict[str, str]
) -> None:
    url = f"mongodb://admin:{MONGO_PASSWORD}@127.0.0.1:{free_port()}/?directConnection=true"
    proc = run_cli({**env, "MONGO_URL": url}, *args)
    assert_one_line_refusal(proc, mentions="MongoDB")
    assert "admin:***@127.0.0.1" in proc.stderr


def test_unreachable_redis_stops_run_before_a_job_is_created(
    env: dict[str, str], db: Database, settings: Settings
) -> None:
    before = snapshot(db)
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    proc = run_cli({**env, "REDIS_URL": url}, "run", "catalog")
    assert_one_line_refusal(proc, mentions="Redis unreachable")
    assert snapshot(db) == before


@pytest.mark.parametrize("args", [["run", "catalog"], ["run", "catalog", "--dry-run"]])
def test_unreachable_catalog_is_one_line_and_no_job(
    args: list[str], env: dict[str, str], db: Database, settings: Settings
) -> None:
    before = snapshot(db)
    url = f"http://reader:{CATALOG_TOKEN}@127.0.0.1:{free_port()}"
    proc = run_cli({**env, "CATALOG_URL": url}, *args)
    assert_one_line_refusal(proc, mentions="API at http://reader:***@127.0.0.1")
    assert_nothing_written(before, db, settings)


@pytest.mark.parametrize("args", [["run", "catalog"], ["run", "catalog", "--dry-run"]])
@pytest.mark.parametrize("token", ["wrong-token-Secret-99", None])
def test_wrong_or_missing_token_is_a_401_line_and_no_job(
    args: list[str], token: str | None, env: dict[str, str], db: Database, settings: Settings
) -> None:
    before = snapshot(db)
    bad_env = {k: v for k, v in env.items() if k != "CATALOG_TOKEN"}
    if token:
        bad_env["CATALOG_TOKEN"] = token
    proc = run_cli(bad_env, *args)
    assert_one_line_refusal(
        proc, mentions="refused the token (HTTP 401)", secrets=(token,) if token else ()
    )
    assert_nothing_written(before, db, settings)


def test_the_same_environment_works_when_nothing_is_wrong(
    env: dict[str, str], db: Database
) -> None:
    """Control: the refusals above come from the wrong input, not from a broken environment."""
    proc = run_cli(env, "run", "catalog", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"sampled": 50' in proc.stdout
    proc = run_cli(env, "jobs", "--json")
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_run_before_any_migration_sets_up_the_engine_s_collections_first(
    env: dict[str, str], mongo_client: pymongo.MongoClient, settings: Settings
) -> None:
    """A team's database needs none of our migrations: the engine sets up its collections.

    Without `active_key` unique two concurrent runs would each create a job: the index is
    there before the job is written.
    """
    name = f"{settings.mongo_db}_bare"
    seed_products(mongo_client[name], 20)
    try:
        proc = run_cli({**env, "MONGO_DB": name}, "run", "catalog")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        db = mongo_client[name]
        assert "active_key_unique" in db.backfill_metadata.index_information()
        assert db.backfill_metadata.count_documents({"kind": "job"}) == 1
        assert "schema_migrations" not in db.list_collection_names()
    finally:
        mongo_client.drop_database(name)
