"""The README's own source (`RatingBySku`), run as written by real workers against a ratings API.

The block marked `<!-- example: rating_by_sku.py -->` in "### Writing a backfill" is
written unchanged into a module outside this repository, found by the workers through
BACKFILL_IMPORTS and their PYTHONPATH; the API is catalog_service.ratings on loopback,
which answers only the bearer token the README's RATINGS_TOKEN names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import bson
import pytest
import requests

from backfill_engine.states import QUARANTINE
from catalog_service.data import is_missing
from catalog_service.ratings import stars_for, start_ratings
from orchestrator.stack import ManagedProcess
from tests.harness import System
from tests.readme_blocks import blocks, section

pytestmark = pytest.mark.e2e

MODULE = "rating_by_sku"
BACKFILL = "rating-by-sku"
TOKEN = "ratings-test-token"
MISSING_RATE = 0.25
# An sku with a slash, a space and a question mark: the path must carry it quoted.
SKUS = [f"SKU-{k}" for k in range(39)] + ["bolt/8 mm?"]


@pytest.fixture
def ratings_api(tmp_path: Path) -> Iterator[ManagedProcess]:
    proc = start_ratings(log_dir=tmp_path / "ratings", token=TOKEN)
    requests.post(f"{proc.url}/_faults", json={"missing_rate": MISSING_RATE}, timeout=10)
    yield proc
    proc.stop()


@pytest.fixture
def team(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ratings_api: ManagedProcess
) -> System:
    """One worker (two slots) that imports the README's module, with the API's URL and token."""
    module_dir = tmp_path / "team_code"
    module_dir.mkdir()
    body = blocks("example", section("### Writing a backfill"))[f"{MODULE}.py"]
    (module_dir / f"{MODULE}.py").write_text(body)
    monkeypatch.syspath_prepend(str(module_dir))
    system.settings = replace(
        system.settings.with_source_env(RATINGS_URL=ratings_api.url, RATINGS_TOKEN=TOKEN),
        imports=(MODULE,),
    )
    system.start_workers(1, concurrency=2, extra_env={"PYTHONPATH": str(module_dir)})
    return system


def test_the_readme_rating_source_writes_each_rating_and_counts_404_as_missing(
    team: System, ratings_api: ManagedProcess
) -> None:
    items = team.db["items"]
    items.insert_many([{"_id": k, "sku": sku} for k, sku in enumerate(SKUS)])
    unknown = sorted(k for k, sku in enumerate(SKUS) if is_missing(sku, 0, MISSING_RATE))
    assert 0 < len(unknown) < len(SKUS) - 1 and len(SKUS) - 1 not in unknown

    summary = team.wait(team.launch(backfill=BACKFILL))
    job_id = str(summary.job["_id"])
    assert summary.job["status"] == "completed_with_errors"
    assert summary.items["written"] == len(SKUS) - len(unknown)
    assert summary.items["missing"] == len(unknown)
    assert summary.items["invalid"] == 0 and summary.batches.get("failed", 0) == 0

    held = list(team.db[QUARANTINE].find({"job_id": job_id}))
    assert sorted(d["item_id"] for d in held) == unknown
    assert {d["reason"] for d in held} == {"missing"}
    for doc in items.find():
        k = doc["_id"]
        if k in unknown:
            assert doc == {"_id": k, "sku": SKUS[k]}  # a 404 writes nothing
            continue
        assert doc["sku"] == SKUS[k] and "backfill_synced_at" in doc
        # The stars exactly, stored as an int (not a double, not a bool).
        assert bson.encode({"r": doc["rating"]}) == bson.encode({"r": stars_for(SKUS[k])})
        assert set(doc) == {"_id", "sku", "rating", "backfill_synced_at"}

    stats = requests.get(f"{ratings_api.url}/_stats", timeout=10).json()
    # One GET per document, each with the token (no 401), the odd sku found by its name.
    assert stats["requests"] == len(SKUS)
    assert stats["by_status"] == {"200": len(SKUS) - len(unknown), "404": len(unknown)}
