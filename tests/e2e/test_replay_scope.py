"""Scoped runs write only inside every scope."""

from __future__ import annotations

import pytest

from migrations.versions._catalog import PRODUCTS
from tests.harness import System
from tests.orchestrator.retry_helpers import seed_regions

pytestmark = pytest.mark.e2e

GOOD_GTIN = "4006381333931"  # a GTIN-13 with a right check digit


def test_ids_file_with_a_filter_writes_none_of_the_listed_documents_outside_it(
    system: System,
) -> None:
    ids = seed_regions(system.db, eu=50, us=100)
    system.start_workers(1)

    job_id = system.launch(backfill="gtin14", ids=tuple(ids), scope=(("region", "EU"),))
    summary = system.wait(job_id)

    assert summary.job["status"] == "completed"
    assert system.db[PRODUCTS].count_documents({"region": "US", "gtin14": {"$exists": True}}) == 0
    assert (
        system.db[PRODUCTS].count_documents({"region": "EU", "gtin14": GOOD_GTIN.zfill(14)}) == 50
    )
