"""Two jobs with different rates in one `--pool threads` worker each keep their own rate.

The rate is the job's, so it travels with the batch, not with the process: before, each
batch start set the process's rate, and a slow API's requests ran at the fast job's rate
for as long as a fast batch had started last.
"""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from bson import ObjectId

from catalog_service.scenario import start_catalog
from tests.harness import System

# Timing-sensitive under load (requests delayed in transit can bunch): `make test` runs
# these after the parallel phase, away from its load.
pytestmark = [pytest.mark.e2e, pytest.mark.timing]

SLOW_RATE = 3.0  # requests/s the slow API allows
FAST_RATE = 15.0

TWO_APIS = """
from dataclasses import replace

from migrations.versions._catalog import CATALOG

SLOW = replace(
    CATALOG,
    name="slow-api",
    collection="slow_items",
    source=replace(CATALOG.source, url_env="SLOW_API_URL", rate_bucket="slow-api"),
    subchunk_size=2,
)
FAST = replace(
    CATALOG,
    name="fast-api",
    collection="fast_items",
    source=replace(CATALOG.source, url_env="FAST_API_URL", rate_bucket="fast-api"),
    subchunk_size=2,
)
"""


def _max_rate(url: str) -> int:
    return int(requests.get(f"{url}/_stats", timeout=5).json()["max_rate_1s"])


def test_two_jobs_in_one_threads_worker_each_keep_their_own_rate(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = tmp_path / "two_apis_code"
    code.mkdir()
    (code / "two_apis.py").write_text(textwrap.dedent(TWO_APIS))
    monkeypatch.syspath_prepend(str(code))
    slow_api = start_catalog(log_dir=system.log_dir)
    fast_api = start_catalog(log_dir=system.log_dir)
    try:
        system.settings = replace(system.settings, imports=("two_apis",)).with_source_env(
            SLOW_API_URL=slow_api.url, FAST_API_URL=fast_api.url
        )
        system.db["slow_items"].insert_many([{"_id": ObjectId()} for _ in range(60)])
        system.db["fast_items"].insert_many([{"_id": ObjectId()} for _ in range(300)])
        # One process, four threads: the batches of both jobs run side by side in it.
        system.start_workers(1, concurrency=4, pool="threads", extra_env={"PYTHONPATH": str(code)})
        slow = system.launch(backfill="slow-api", batch_size=25, rate_per_second=SLOW_RATE)
        fast = system.launch(backfill="fast-api", batch_size=50, rate_per_second=FAST_RATE)
        for job_id in (slow, fast):
            assert system.wait(job_id, timeout=240).job["status"] == "completed"
        # Burst of one token: a 1-second window holds the rate plus the request at its edge;
        # one more for requests bunched in transit. At the fast job's rate the slow API
        # would see a whole batch's requests (up to 13) within one second.
        assert _max_rate(slow_api.url) <= SLOW_RATE + 2
        assert _max_rate(fast_api.url) <= FAST_RATE + 2
    finally:
        slow_api.stop()
        fast_api.stop()
