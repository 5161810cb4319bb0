"""Fixtures for source tests: the lookup and items stand-ins (catalog_service.shapes), real
processes, and the catalog stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from catalog_service.shapes import start_shape
from orchestrator.stack import ManagedProcess
from tests.catalog.standin import (  # noqa: F401  (fixtures are found by name)
    catalog,
    catalog_server,
)


@dataclass
class ShapeApi:
    """A running stand-in of one shape: its URL, counters and knobs."""

    proc: ManagedProcess

    @property
    def url(self) -> str:
        return self.proc.url

    def stats(self) -> dict[str, Any]:
        resp = requests.get(f"{self.url}/_stats", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def faults(self, **knobs: Any) -> dict[str, Any]:
        resp = requests.post(f"{self.url}/_faults", json=knobs, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def reset(self) -> None:
        requests.post(f"{self.url}/_faults/reset", timeout=10).raise_for_status()
        requests.post(f"{self.url}/_stats/reset", timeout=10).raise_for_status()


def running(shape: str, log_dir: Path) -> Iterator[ShapeApi]:
    """One stand-in of `shape` for a fixture's lifetime."""
    api = ShapeApi(start_shape(shape, log_dir=log_dir))
    try:
        yield api
    finally:
        api.proc.stop()


def fresh(api: ShapeApi) -> Iterator[ShapeApi]:
    """`api` with default knobs and zeroed counters, reset again afterwards."""
    api.reset()
    yield api
    api.reset()


@pytest.fixture(scope="session")
def lookup_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShapeApi]:
    yield from running("lookup", tmp_path_factory.mktemp("lookup"))


@pytest.fixture(scope="session")
def items_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShapeApi]:
    yield from running("items", tmp_path_factory.mktemp("items"))


@pytest.fixture
def lookup_api(lookup_server: ShapeApi) -> Iterator[ShapeApi]:
    yield from fresh(lookup_server)


@pytest.fixture
def items_api(items_server: ShapeApi) -> Iterator[ShapeApi]:
    yield from fresh(items_server)
