"""A `--filter` the server rejects is refused before a job exists: one line, non-zero exit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_engine.states import METADATA
from backfill_migrations import runner
from catalog_service.scenario import start_catalog
from orchestrator.stack import ManagedProcess
from tests.cli.test_bad_input import assert_one_line_refusal, run_cli
from tests.harness import METADATA_VERSION, seed_products


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[ManagedProcess]:
    proc = start_catalog(log_dir=tmp_path / "logs")
    yield proc
    proc.stop()


@pytest.fixture
def env(
    settings: Settings, db: Database, catalog: ManagedProcess, tmp_path: Path
) -> dict[str, str]:
    seed_products(db, 20)
    runner.up(
        db, runner.RunnerConfig.from_settings(settings, log=lambda m: None), to=METADATA_VERSION
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "MONGO_"))}
    return {
        **base,
        **settings.to_env(),
        "CATALOG_URL": catalog.url,
        "BACKFILL_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.mark.parametrize(
    ("query", "mentions"),
    [
        ('{"name": {"$regex": "("}}', "regular expression is invalid"),
        ('{"$and": 5}', "$and"),
    ],
)
def test_a_filter_the_server_rejects_creates_no_job(
    env: dict[str, str], db: Database, query: str, mentions: str
) -> None:
    proc = run_cli(env, "run", "catalog", "--filter", query)
    assert_one_line_refusal(proc, mentions=mentions)
    assert "--filter" in proc.stderr, proc.stderr
    assert db[METADATA].count_documents({"kind": "job"}) == 0
    assert db[METADATA].count_documents({"kind": "batch"}) == 0
