"""Enrich every product from the catalog API, as a distributed, resumable backfill job."""

from __future__ import annotations

from pymongo.database import Database

from migrations import Migration, MigrationContext
from migrations.versions._catalog import CATALOG


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
