"""Enrich every product from the catalog API, as a distributed, resumable backfill job."""

from __future__ import annotations

import re
from typing import Any

from pymongo.database import Database

from backfill_engine import Backfill, HttpSource, InvalidPayloadError
from migrations import Migration, MigrationContext

MAX_WEIGHT_GRAMS = 10_000_000  # 10 tonnes: beyond any product we sell
# ASCII digits only: `\d` would also accept other scripts' digits. The check digit is not
# verified: real catalogs carry legacy codes whose check digits we should not second-guess.
_GTIN = re.compile(r"[0-9]{8,14}")


def check_catalog_item(fields: dict[str, Any]) -> dict[str, Any]:
    """The catalog's rules beyond types: a GTIN of 8-14 digits, a plausible weight."""
    if not _GTIN.fullmatch(fields["gtin"]):
        raise InvalidPayloadError("gtin must be 8-14 digits", "gtin")
    if not 0 < fields["weight_grams"] <= MAX_WEIGHT_GRAMS:
        raise InvalidPayloadError(
            f"weight_grams {fields['weight_grams']} outside 1..{MAX_WEIGHT_GRAMS}", "weight_grams"
        )
    return fields


CATALOG = Backfill(
    name="catalog",
    description="brand, category, gtin, weight_grams from the catalog API",
    collection="products",
    source=HttpSource(
        url_env="CATALOG_URL", token_env="CATALOG_TOKEN", path="/v1/products", rate_bucket="catalog"
    ),
    writes={"brand": str, "category": str, "gtin": str, "weight_grams": int},
    check=check_catalog_item,
    synced_field="catalog_synced_at",
)


class BackfillProductsFromCatalog(Migration):
    version = "20240406_backfill_products_from_catalog"
    description = "backfill brand, category, gtin, weight_grams from the catalog API"

    def up(self, db: Database, ctx: MigrationContext | None = None) -> None:
        # Starts the job, or joins the one a previous (interrupted) `migrate up` started;
        # succeeds only when the job completed with nothing failed or quarantined.
        from orchestrator.backfill_runs import run_backfill

        run_backfill(db, CATALOG, ctx)

    def down(self, db: Database, ctx: MigrationContext | None = None) -> None:
        from orchestrator.backfill_runs import undo_backfill

        undo_backfill(db, CATALOG, ctx)
