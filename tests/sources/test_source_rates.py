"""The shared rate bucket holds for every shape and for a custom source's own calls.

Each backfill of tests/sources/test_source_backfills.py's team module runs at RATE with
two worker slots that could go far faster; the stand-in counts the requests of every
1-second window.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import System
from tests.sources.conftest import ShapeApi
from tests.sources.test_source_backfills import start_team

# Timing-sensitive under load: `make test` runs these after the parallel phase, away from its load.
pytestmark = [pytest.mark.e2e, pytest.mark.timing]

RATE = 10.0  # requests per second, all workers together
REQUESTS = 30  # enough that an unlimited run would burst far past RATE


@pytest.mark.parametrize(
    ("backfill", "api", "per_request"),
    [("lookup-fields", "lookup", 10), ("item-fields", "items", 1), ("brand-by-sku", "items", 1)],
)
def test_every_shape_calls_within_the_rate(
    system: System,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lookup_api: ShapeApi,
    items_api: ShapeApi,
    backfill: str,
    api: str,
    per_request: int,
) -> None:
    # Small sub-chunks: many requests, which two slots could make far faster than RATE.
    small = {"BACKFILL_SUBCHUNK_SIZE": "10"}
    team = start_team(system, tmp_path / "team_code", monkeypatch, lookup_api, items_api, small)
    standin = lookup_api if api == "lookup" else items_api
    team.db["items"].insert_many(
        [{"_id": k, "sku": f"r-{k}"} for k in range(REQUESTS * per_request)]
    )
    summary = team.wait(team.launch(backfill=backfill, batch_size=50, rate_per_second=RATE))
    assert summary.job["status"] == "completed"
    stats = standin.stats()
    assert stats["requests"] >= REQUESTS
    # Burst of one token: a 1-second window holds at most RATE requests plus the one at its edge.
    assert stats["max_rate_1s"] <= RATE + 1, stats["max_rate_1s"]
