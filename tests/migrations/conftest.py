"""Fixtures for migration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.migrations.mig_helpers import MigrationDir


@pytest.fixture
def mdir(tmp_path: Path) -> MigrationDir:
    """An empty migrations directory for one test."""
    d = tmp_path / "versions"
    d.mkdir()
    return MigrationDir(d)
