"""A team's batch hook (BACKFILL_HOOKS=module:Class) runs in real workers; one that raises in
every method is logged and never fails or corrupts a batch."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from migrations.versions._catalog import PRODUCTS
from tests.e2e.test_backfill import assert_enriched_with_standin_values
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

TEAM_HOOKS = """
from backfill_engine.hooks import BatchHook


class Raising(BatchHook):
    def _boom(self, *args):
        raise RuntimeError("a team hook that always fails")

    before_batch = after_batch = before_subchunk = before_source = after_source = _boom
    after_write = after_phase = checkpoint_fields = on_error = on_unknown_backfill = _boom
"""

CALLED_ON_EVERY_BATCH = (
    "before_batch",
    "after_batch",
    "before_subchunk",
    "before_source",
    "after_source",
    "after_write",
    "after_phase",
    "checkpoint_fields",
)


def test_a_team_hook_raising_everywhere_leaves_the_job_complete_and_correct(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package_dir = tmp_path / "team_code"
    package_dir.mkdir()
    (package_dir / "team_hooks.py").write_text(textwrap.dedent(TEAM_HOOKS))
    monkeypatch.syspath_prepend(str(package_dir))
    system.settings = replace(system.settings, hooks=("team_hooks:Raising",))
    [worker] = system.start_workers(1, concurrency=2, extra_env={"PYTHONPATH": str(package_dir)})
    ids = seed_products(system.db, 60)
    job_id = system.launch(batch_size=20)
    summary = system.wait(job_id)
    assert summary.job["status"] == "completed"
    assert summary.items["written"] == 60 and summary.items["invalid"] == 0
    assert_enriched_with_standin_values(system, ids)
    batches = list(system.db.backfill_metadata.find({"job_id": job_id, "kind": "batch"}))
    assert len(batches) == 3 and all(b["status"] == "done" and b["timings"] for b in batches)
    assert system.db[PRODUCTS].count_documents({}) == 60
    log = worker.log_path.read_text() if worker.log_path else ""
    for method in CALLED_ON_EVERY_BATCH:
        assert f"hook Raising.{method} failed; ignored" in log, method
