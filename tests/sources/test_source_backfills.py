"""A team's backfills against APIs of other shapes, run by real workers to completion.

The team module is written to a directory of its own and found through BACKFILL_IMPORTS,
as in tests/e2e/test_team_backfill.py: a POST-lookup HttpSource, a one-id-per-path
HttpSource, and a source class of the team's own that calls the API through `ctx.http`.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from backfill_engine.states import QUARANTINE
from catalog_service.data import expected_fields, expected_item, is_missing
from tests.harness import System
from tests.sources.conftest import ShapeApi

pytestmark = pytest.mark.e2e

TEAM_MODULE = '''
"""Our team's backfills from the lookup API and the items API."""

from urllib.parse import quote

from backfill_engine import (
    Backfill, HttpEndpoint, HttpSource, Items, PerPath, PostJson, SourceResult,
)

FIELDS = {"brand": str, "category": str, "gtin": str, "weight_grams": int}

LOOKUP_FIELDS = Backfill(
    name="lookup-fields",
    collection="items",
    source=HttpSource(
        url_env="LOOKUP_URL",
        path="/lookup",
        rate_bucket="lookup",
        ask=PostJson(key="skus", ids_per_request=50),
        answer=Items(at="data", id_field="sku", missing=None),
    ),
    writes=FIELDS,
    synced_field="lookup_synced_at",
)

ITEM_FIELDS = Backfill(
    name="item-fields",
    collection="items",
    source=HttpSource(url_env="ITEMS_URL", path="/items/{id}", rate_bucket="items", ask=PerPath()),
    writes=FIELDS,
    synced_field="items_synced_at",
)


class BrandBySku:
    """Our own source: one GET per document, by its `sku` field rather than its _id."""

    http = HttpEndpoint(url_env="ITEMS_URL")
    rate_bucket = "items"
    keyed_by_string = False

    def fetch(self, docs, ctx):
        result = SourceResult()
        for doc in docs:
            answer = ctx.http.get("/items/" + quote(doc["sku"], safe=""), route="/items/{sku}")
            if answer.status == 404:
                result.missing.append(doc["_id"])
            else:
                result.items[doc["_id"]] = {"brand": answer.body["brand"]}
        return result


BRAND_BY_SKU = Backfill(
    name="brand-by-sku",
    collection="items",
    reads=("sku",),
    source=BrandBySku(),
    writes={"brand": str},
    synced_field="brand_synced_at",
)
'''

FIELDS = ("brand", "category", "gtin", "weight_grams")


def start_team(
    system: System,
    package_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    lookup_api: ShapeApi,
    items_api: ShapeApi,
    worker_env: dict[str, str] | None = None,
) -> System:
    """`system` with the team module importable and one worker (two slots) that knows it."""
    package_dir.mkdir()
    (package_dir / "shaped_backfills.py").write_text(textwrap.dedent(TEAM_MODULE))
    monkeypatch.syspath_prepend(str(package_dir))
    system.settings = replace(
        system.settings.with_source_env(LOOKUP_URL=lookup_api.url, ITEMS_URL=items_api.url),
        imports=("shaped_backfills",),
    )
    env = {"PYTHONPATH": str(package_dir), **(worker_env or {})}
    system.start_workers(1, concurrency=2, extra_env=env)
    return system


@pytest.fixture
def team(
    system: System,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lookup_api: ShapeApi,
    items_api: ShapeApi,
) -> System:
    return start_team(system, tmp_path / "team_code", monkeypatch, lookup_api, items_api)


def _quarantined_missing(team: System, job_id: str) -> list[object]:
    held = team.db[QUARANTINE].find({"job_id": job_id, "reason": "missing"})
    return sorted(d["item_id"] for d in held)


def test_a_post_lookup_backfill_runs_to_completion(team: System, lookup_api: ShapeApi) -> None:
    n, rate = 230, 0.2
    lookup_api.faults(missing_rate=rate)
    items = team.db["items"]
    items.insert_many([{"_id": i} for i in range(n)])
    unknown = [i for i in range(n) if is_missing(str(i), 0, rate)]
    summary = team.wait(team.launch(backfill="lookup-fields", batch_size=100))
    assert summary.items["written"] == n - len(unknown)
    assert summary.items["missing"] == len(unknown) > 0
    assert _quarantined_missing(team, str(summary.job["_id"])) == unknown
    for doc in items.find():
        if doc["_id"] in unknown:
            assert "brand" not in doc
        else:
            assert {f: doc[f] for f in FIELDS} == expected_fields(str(doc["_id"]))
    # 50 skus per request: no more requests than the sub-chunks of each batch need.
    per_batch = math.ceil(100 / team.settings.subchunk_size) * math.ceil(
        min(100, team.settings.subchunk_size) / 50
    )
    assert lookup_api.stats()["requests"] <= math.ceil(n / 100) * per_batch


def test_a_one_id_per_path_backfill_counts_404_as_missing(
    team: System, items_api: ShapeApi
) -> None:
    n, rate = 60, 0.25
    items_api.faults(missing_rate=rate)
    items = team.db["items"]
    ids = [f"p-{k}" for k in range(n)]
    items.insert_many([{"_id": i} for i in ids])
    unknown = sorted(i for i in ids if is_missing(i, 0, rate))
    summary = team.wait(team.launch(backfill="item-fields"))
    assert summary.items["written"] == n - len(unknown)
    assert summary.items["missing"] == len(unknown) > 0 and summary.items["invalid"] == 0
    assert _quarantined_missing(team, str(summary.job["_id"])) == unknown
    for doc in items.find({"_id": {"$nin": unknown}}):
        assert {f: doc[f] for f in FIELDS} == expected_fields(doc["_id"])
    assert items_api.stats()["requests"] == n  # one request per id, none repeated


def test_a_custom_source_gets_the_engines_retries_and_counts(
    team: System, items_api: ShapeApi
) -> None:
    items_api.faults(fail_next=1)  # the first request is answered 503, then retried
    items = team.db["items"]
    items.insert_many([{"_id": k, "sku": f"s-{k}"} for k in range(20)])
    summary = team.wait(team.launch(backfill="brand-by-sku"))
    assert summary.job["status"] == "completed"
    assert summary.items["written"] == 20
    for doc in items.find():
        assert doc["brand"] == expected_item(doc["sku"])["brand"]
    assert items_api.stats()["by_status"] == {"200": 20, "503": 1}
    batches = team.db.backfill_metadata.find({"job_id": str(summary.job["_id"]), "kind": "batch"})
    source_stats = [b.get("source") or {} for b in batches]
    assert sum(s.get("requests", 0) for s in source_stats) == 21
    assert sum(s.get("http_5xx", 0) for s in source_stats) == 1
