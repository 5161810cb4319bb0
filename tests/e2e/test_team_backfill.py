"""A team writes its own backfill module outside this repository and runs it on the engine.

Written as a user would: a module in a directory of its own, found by the workers through
BACKFILL_IMPORTS (and PYTHONPATH), started with real worker processes.
"""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from backfill_engine.scope import parse_filter
from backfill_engine.states import QUARANTINE
from orchestrator.verify import verify
from tests.harness import System

TEAM_MODULE = '''
"""Our team's backfills: cents from prices, and supplier names from another collection."""

from backfill_engine import Backfill, CollectionSource, FunctionSource


def price_cents(doc, params):
    price = doc.get("price")
    if price is None:
        return None
    if not isinstance(price, (int, float)) or price < 0:
        raise ValueError(f"price {price!r} is not a non-negative number")
    return {"price_cents": int(round(price * 100 * params.get("factor", 1)))}


PRICE_CENTS = Backfill(
    name="price-cents",
    collection="items",
    query={"price": {"$exists": True}},
    reads=("price",),
    source=FunctionSource(price_cents),
    writes={"price_cents": int},
    synced_field="price_cents_at",
    params={"factor": int},
    subchunk_size=7,
)

SUPPLIER_NAME = Backfill(
    name="supplier-name",
    collection="items",
    reads=("supplier_id",),
    source=CollectionSource("suppliers", key="code", local="supplier_id", fields=("name",)),
    writes={"name": str},
    synced_field="supplier_synced_at",
)
'''


@pytest.fixture
def team(system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> System:
    package_dir = tmp_path / "team_code"
    package_dir.mkdir()
    (package_dir / "team_backfills.py").write_text(textwrap.dedent(TEAM_MODULE))
    monkeypatch.syspath_prepend(str(package_dir))
    system.settings = replace(system.settings, imports=("team_backfills",))
    system.start_workers(1, concurrency=2, extra_env={"PYTHONPATH": str(package_dir)})
    return system


def test_a_team_module_runs_end_to_end_with_real_workers(team: System) -> None:
    items = team.db["items"]
    items.insert_many([{"_id": i, "price": i + 0.25} for i in range(40)] + [{"_id": 99}])
    items.insert_one({"_id": 100, "price": "free"})
    job_id = team.launch(backfill="price-cents", params=(("factor", 2),))
    summary = team.wait(job_id)
    assert summary.job["params"] == {"factor": 2}
    for i in range(40):
        assert items.find_one({"_id": i})["price_cents"] == round((i + 0.25) * 200)
    assert "price_cents" not in items.find_one({"_id": 99})  # out of scope: no price
    held = team.db[QUARANTINE].find_one({"job_id": job_id})
    assert held["item_id"] == 100 and held["reason"] == "invalid"
    assert summary.job["status"] == "completed_with_errors"
    assert verify(team.db, job_id, {"price-cents": _definition(team, "price-cents")}).ok

    # A rerun writes nothing.
    again = team.wait(team.launch(backfill="price-cents", params=(("factor", 2),)))
    assert again.items["written"] == 0 and again.items["unchanged"] == 40


def test_collection_source_and_a_scoped_slice(team: System) -> None:
    team.db["suppliers"].insert_many([{"code": "A", "name": "Acme"}, {"code": "B", "name": "Bolt"}])
    items = team.db["items"]
    items.insert_many([{"_id": i, "supplier_id": "A" if i % 2 else "B"} for i in range(30)])
    # A slice first: only supplier A, at most 5 documents.
    scope = tuple(parse_filter('{"supplier_id": "A"}').items())
    first = team.wait(team.launch(backfill="supplier-name", scope=scope, limit=5))
    assert first.items["size"] == 5 and first.items["written"] == 5
    named = sorted(d["_id"] for d in items.find({"name": {"$exists": True}}))
    assert named == [1, 3, 5, 7, 9]
    # Then the rest.
    rest = team.wait(team.launch(backfill="supplier-name"))
    assert rest.items["written"] == 25 and rest.items["unchanged"] == 5
    assert items.find_one({"_id": 4})["name"] == "Bolt"


def _definition(team: System, name: str):  # type: ignore[no-untyped-def]
    from backfill_engine.runtime import worker_definitions

    return worker_definitions(team.settings)[name]


def test_a_worker_that_does_not_know_the_backfill_leaves_its_batches_and_says_so(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from orchestrator.progress import summary_table

    package_dir = tmp_path / "team_code"
    package_dir.mkdir()
    (package_dir / "team_backfills.py").write_text(textwrap.dedent(TEAM_MODULE))
    monkeypatch.syspath_prepend(str(package_dir))
    system.start_workers(1, concurrency=1)  # started without BACKFILL_IMPORTS
    system.settings = replace(system.settings, imports=("team_backfills",))
    system.db["items"].insert_many([{"_id": i, "price": 1.5} for i in range(10)])
    job_id = system.launch(backfill="price-cents")
    system.wait_until(
        lambda: system.summary(job_id).job.get("unknown_to_workers"), 60, "the worker to say so"
    )
    batches = list(system.db.backfill_metadata.find({"job_id": job_id, "kind": "batch"}))
    assert batches and all(b["attempts"] == 0 and b["lease_owner"] is None for b in batches)
    console = Console(width=200, record=True)
    console.print(summary_table(system.summary(job_id)))
    assert "not in their BACKFILL_IMPORTS" in console.export_text()
    # A worker that knows it takes the batches over.
    system.start_workers(1, concurrency=1, extra_env={"PYTHONPATH": str(package_dir)})
    summary = system.wait(job_id)
    assert summary.job["status"] == "completed" and summary.items["written"] == 10
