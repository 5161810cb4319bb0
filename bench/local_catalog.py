"""The catalog backfill with the catalog's answers computed in the worker: no HTTP.

`catalog_local` is `catalog` (the same fields, whitelist, checks and synced stamp) with a
FunctionSource that returns what the stand-in would answer for each id
(catalog_service.data, as the floor precomputes it). Run against the floor, it splits our
CPU per document into the engine's machinery (leases, checkpoints, journal, validation,
hashing, the writes) and what asking an HTTP API costs the worker (bench.cli's floor
series). Workers load it only where the bench names it in BACKFILL_IMPORTS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from backfill_engine import Backfill, FunctionSource
from catalog_service.data import expected_fields
from migrations.versions._catalog import CATALOG

NAME = "catalog_local"
MODULE = __name__  # for BACKFILL_IMPORTS


def catalog_answer(doc: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """What the stand-in catalog answers for this document's id (none missing or hostile)."""
    return expected_fields(str(doc["_id"]))


CATALOG_LOCAL: Backfill = dataclasses.replace(
    CATALOG,
    name=NAME,
    description="the catalog backfill with the stand-in's answers computed in-process",
    source=FunctionSource(catalog_answer),
)
