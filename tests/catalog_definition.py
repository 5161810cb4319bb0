"""The catalog backfill as its tests use it (defined in migrations/versions/_catalog.py)."""

from __future__ import annotations

from backfill_engine.sources import HttpSource
from migrations.versions._catalog import (
    CATALOG,
    CATALOG_FIELDS,
    CATALOG_PATH,
    MAX_WEIGHT_GRAMS,
    SYNCED_AT_FIELD,
    validate_catalog_item,
)

assert isinstance(CATALOG.source, HttpSource)
CATALOG_SOURCE: HttpSource = CATALOG.source
validate_item = validate_catalog_item

__all__ = [
    "CATALOG",
    "CATALOG_FIELDS",
    "CATALOG_PATH",
    "CATALOG_SOURCE",
    "MAX_WEIGHT_GRAMS",
    "SYNCED_AT_FIELD",
    "validate_item",
]
