from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pymongo.database import Database

from tests.harness import FAST, System
from workers.settings import Settings


@pytest.fixture
def system(settings: Settings, db: Database, tmp_path: Path) -> Iterator[System]:
    """Catalog stand-in + this test's database (with backfill_metadata) + no workers yet."""
    sys_ = System(settings=replace(settings, **FAST), db=db, log_dir=tmp_path / "logs")
    sys_.start_catalog()
    sys_.migrate()
    yield sys_
    sys_.close()
