"""Enrich every product from the catalog API, as a distributed, resumable backfill job."""

from __future__ import annotations

from pymongo.database import Database

from migrations import Migration, MigrationContext


class BackfillProductsFromCatalog(Migration):
    version = "20240406_backfill_products_from_catalog"
    description = "backfill brand, category, gtin, weight_grams from the catalog API"

    def up(self, db: Database, ctx: MigrationContext | None = None) -> None:
        # Starts the job, or joins the one a previous (interrupted) `migrate up` started;
        # succeeds only when the job completed with nothing failed or quarantined.
        from orchestrator.catalog_migration import run_catalog_backfill
        from workers.settings import Settings

        settings = (ctx.settings if ctx else None) or Settings.from_env()
        if ctx:
            run_catalog_backfill(db, settings, ctx.log)
        else:
            run_catalog_backfill(db, settings)

    def down(self, db: Database, ctx: MigrationContext | None = None) -> None:
        from orchestrator.catalog_migration import remove_enriched_fields

        if ctx:
            remove_enriched_fields(db, ctx.log)
        else:
            remove_enriched_fields(db)
