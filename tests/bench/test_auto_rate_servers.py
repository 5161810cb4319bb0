"""Each `--rate auto` job of the bench runs on a SecantusDB of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymongo
import pytest

from bench import auto_rate
from bench.auto_rate import STARTS, fresh_mongo, run_all
from bench.servers import MONGO_DATA


def test_every_job_gets_its_own_server_for_as_long_as_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []

    @contextmanager
    def server(run_no: int) -> Iterator[str]:
        events.append(f"up {run_no}")
        yield f"mongodb://job{run_no}"
        events.append(f"down {run_no}")

    def one_start(url: str, *args: Any) -> dict[str, Any]:
        events.append(f"job on {url}")
        return {"url": url}

    monkeypatch.setattr(auto_rate, "one_start", one_start)
    rows = run_all(server, "redis://x", tmp_path, say=lambda m: None, schemes=("a", "b"))
    jobs = 2 * len(STARTS)
    assert [r["url"] for r in rows] == [f"mongodb://job{n}" for n in range(jobs)]
    expected = [
        e for n in range(jobs) for e in (f"up {n}", f"job on mongodb://job{n}", f"down {n}")
    ]
    assert events == expected  # a job's server is stopped before the next job's starts


def test_one_url_is_shared_by_every_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto_rate, "one_start", lambda url, *args: {"url": url})
    rows = run_all("mongodb://shared", "redis://x", tmp_path, say=lambda m: None, schemes=("a",))
    assert [r["url"] for r in rows] == ["mongodb://shared"] * len(STARTS)


def test_a_fresh_server_starts_empty_and_leaves_nothing_behind(tmp_path: Path) -> None:
    data = tmp_path / f"{MONGO_DATA}-auto3"
    with fresh_mongo(tmp_path, 3) as url:
        client: pymongo.MongoClient = pymongo.MongoClient(url, serverSelectionTimeoutMS=10_000)
        try:
            assert not [d for d in client.list_database_names() if d.startswith("bench")]
            client["bench_auto_3"]["products"].insert_one({"_id": 1})
            assert data.is_dir()
        finally:
            client.close()
    assert not data.exists()
    gone: pymongo.MongoClient = pymongo.MongoClient(url, serverSelectionTimeoutMS=500)
    try:
        with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
            gone.admin.command("ping")
    finally:
        gone.close()
