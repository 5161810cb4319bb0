"""The README's nested-path backfills, run as written by real workers.

The block marked `<!-- example: nested_backfills.py -->` in "### Writing a backfill" is
written unchanged into a module outside this repository, found by the workers through
BACKFILL_IMPORTS and their PYTHONPATH.

It writes one leaf and leaves its siblings; a document whose parent is not a document is
held in quarantine alone; verify agrees; undo puts the leaf back exactly (int stays int,
null stays null, absent goes again). A CollectionSource renames the other collection's
field to ours.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import bson
import pytest

from backfill_engine.sources import SourceContext
from backfill_engine.states import QUARANTINE
from orchestrator.backfill_runs import undo_backfill
from orchestrator.dryrun import dry_run
from orchestrator.verify import verify
from tests.harness import System
from tests.readme_blocks import blocks, section

pytestmark = pytest.mark.e2e

MODULE = "nested_backfills"
SYNCED = "backfill_synced_at"  # the README's WEIGHT_G keeps the default synced_field


@pytest.fixture
def team(system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> System:
    package_dir = tmp_path / "team_code"
    package_dir.mkdir()
    body = blocks("example", section("### Writing a backfill"))[f"{MODULE}.py"]
    (package_dir / f"{MODULE}.py").write_text(body)
    monkeypatch.syspath_prepend(str(package_dir))
    system.settings = replace(system.settings, imports=(MODULE,))
    system.start_workers(1, concurrency=2, extra_env={"PYTHONPATH": str(package_dir)})
    return system


def _definition(team: System, name: str) -> Any:
    from backfill_engine.runtime import worker_definitions

    return worker_definitions(team.settings)[name]


def _bson(doc: dict[str, Any] | None) -> bytes:
    """Type-exact form: int and float, null and absent, key order all differ."""
    return bson.encode(doc or {})


# What each document holds before; every one has spec.weight_kg = 1.5 -> 1500 g.
BEFORE: dict[int, dict[str, Any]] = {
    0: {"dimensions": {"height": 3, "weight_g": 7}},  # an int the backfill overwrites
    1: {"dimensions": {"weight_g": 1500.0, "height": 4}},  # a double: comes back a double
    2: {"dimensions": {"weight_g": None}},  # null, not absent
    3: {"dimensions": {"height": 5}},  # the leaf absent, siblings present
    4: {},  # no parent at all: the backfill creates it
    5: {"dimensions": {"weight_g": 1500, "height": 6}},  # right already: not written
    6: {"dimensions": "n/a"},  # not a document: held, never a failed batch
    7: {"dimensions": [{"weight_g": 1}]},  # an array: held too
    8: {"dimensions": {"depth": {"cm": 2}, "weight_g": 1}, "tags": ["a"]},
}
NO_WEIGHT = 9


def test_a_nested_backfill_writes_the_leaf_and_undo_puts_it_back(team: System) -> None:
    items = team.db["items"]
    items.insert_many(
        [
            {"_id": pid, "spec": {"weight_kg": 1.5, "note": "x"}, **held}
            for pid, held in BEFORE.items()
        ]
    )
    # No spec.weight_kg: the README's grams() answers None, so it is missing, not written.
    items.insert_one({"_id": NO_WEIGHT, "spec": {"note": "x"}, "dimensions": {"height": 1}})
    original = {d["_id"]: d for d in items.find()}
    backfill = _definition(team, "weight-g")
    dry = dry_run(team.db, backfill, SourceContext(team.db, {}))
    assert (dry.changed, dry.unchanged, dry.invalid, dry.missing) == (6, 1, 2, 1)
    assert dry.fields_changed == {"dimensions.weight_g": 6}
    assert dry.examples[0]["set"] == {"dimensions.weight_g": 1500}

    job_id = team.launch(backfill="weight-g")
    summary = team.wait(job_id)
    assert summary.job["status"] == "completed_with_errors"
    assert summary.items["written"] == 6 and summary.items["unchanged"] == 1
    assert summary.items["invalid"] == 2 and summary.batches.get("failed", 0) == 0
    assert summary.items["missing"] == 1

    after = {d["_id"]: d for d in items.find()}
    for pid in (0, 1, 2, 3, 4, 8):
        dims = after[pid]["dimensions"]
        assert _bson({"w": dims["weight_g"]}) == _bson({"w": 1500})  # an int
        siblings = {k: v for k, v in dims.items() if k != "weight_g"}
        was = original[pid].get("dimensions", {})
        assert siblings == {k: v for k, v in was.items() if k != "weight_g"}
        assert after[pid]["spec"] == original[pid]["spec"] and SYNCED in after[pid]
    assert after[5] == original[5]  # right already: not even stamped
    for pid in (6, 7, NO_WEIGHT):
        assert after[pid] == original[pid]
    held = {d["item_id"]: d for d in team.db[QUARANTINE].find({"job_id": job_id})}
    assert set(held) == {6, 7, NO_WEIGHT} and held[NO_WEIGHT]["reason"] == "missing"
    assert held[6]["reason"] == "invalid" and held[6]["error_class"] == "ParentNotDocument"
    assert "dimensions is str, not a document" in held[6]["error"]
    assert "dimensions is an array" in held[7]["error"]

    assert verify(team.db, job_id, {"weight-g": backfill}).ok

    again = team.wait(team.launch(backfill="weight-g"))
    assert again.items["written"] == 0 and again.items["unchanged"] == 7

    report = undo_backfill(team.db, backfill, log=lambda line: None)
    assert report.restored == 12  # 6 leaves and their 6 stamps
    assert report.conflicts == 0
    restored = {d["_id"]: d for d in items.find()}
    for pid in original:
        if pid == 4:
            continue
        assert _bson(restored[pid]) == _bson(original[pid]), pid
    # The parent the backfill created stays as an empty document (journal.py says why).
    assert restored[4] == {**original[4], "dimensions": {}}


def test_a_collection_source_mapping_writes_our_field_name(team: System) -> None:
    team.db["customers"].insert_many(
        [{"code": "A", "name": "Ada", "city": "Paris"}, {"code": "B", "name": "Bob"}]
    )
    orders = team.db["orders"]
    orders.insert_many([{"_id": i, "customer_id": "AB"[i % 2]} for i in range(10)])
    summary = team.wait(team.launch(backfill="customer-name"))
    assert summary.job["status"] == "completed" and summary.items["written"] == 10
    assert orders.find_one({"_id": 0}) is not None
    doc = orders.find_one({"_id": 0}, {"_id": 0, "backfill_synced_at": 0})
    assert doc == {"customer_id": "A", "customer_name": "Ada"}
    assert orders.find_one({"_id": 1})["customer_name"] == "Bob"
