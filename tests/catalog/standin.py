"""A running catalog stand-in for tests: its URL, counters and run-time knobs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from catalog_service.scenario import start_catalog
from orchestrator.stack import ManagedProcess

HUGE_CHARS = 4096  # tests need the "huge" hostile value over the limits, not 10 MB of it
DRAIN_SECONDS = 10.0


@dataclass
class StandIn:
    """Client side of the stand-in's control endpoints."""

    proc: ManagedProcess
    token: str | None = None

    @property
    def url(self) -> str:
        return self.proc.url

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        """GET an API path, with `token` (default: the stand-in's own) as Bearer."""
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + path, headers=headers, timeout=10, **kwargs)

    def stats(self, ids: list[str] | None = None) -> dict[str, Any]:
        params = {"ids": ",".join(ids)} if ids is not None else None
        resp = requests.get(f"{self.url}/_stats", params=params, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def faults(self, **knobs: Any) -> dict[str, Any]:
        resp = requests.post(f"{self.url}/_faults", json=knobs, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def reset(self) -> None:
        """Default knobs, zero counters, after requests still stalled have finished."""
        requests.post(f"{self.url}/_faults/reset", timeout=10).raise_for_status()
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        requests.post(f"{self.url}/_stats/reset", timeout=10).raise_for_status()


def launch(log_dir: Path, token: str | None = None) -> StandIn:
    proc = start_catalog(log_dir=log_dir, extra_args=["--huge-chars", str(HUGE_CHARS)], token=token)
    return StandIn(proc, token)


@pytest.fixture(scope="session")
def catalog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """One stand-in without auth for the session."""
    standin = launch(tmp_path_factory.mktemp("catalog"))
    yield standin
    standin.proc.stop()


@pytest.fixture
def catalog(catalog_server: StandIn) -> Iterator[StandIn]:
    """The session stand-in with default knobs and zeroed counters, reset again afterwards."""
    catalog_server.reset()
    yield catalog_server
    catalog_server.reset()


@pytest.fixture(scope="session")
def secured_catalog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """A stand-in that requires a (random) bearer token."""
    standin = launch(tmp_path_factory.mktemp("catalog-auth"), token=f"tok-{uuid.uuid4().hex}")
    yield standin
    standin.proc.stop()


@pytest.fixture
def secured_catalog(secured_catalog_server: StandIn) -> Iterator[StandIn]:
    secured_catalog_server.reset()
    yield secured_catalog_server
    secured_catalog_server.reset()
