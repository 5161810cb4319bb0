from __future__ import annotations

import pytest
from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_migrations import runner
from tests.harness import METADATA_VERSION


@pytest.fixture
def db(db: Database, settings: Settings) -> Database:
    """This test's database with backfill_metadata and its indexes (migration 20240405)."""
    config = runner.RunnerConfig.from_settings(settings, log=lambda _m: None)
    runner.up(db, config, to=METADATA_VERSION)
    return db
