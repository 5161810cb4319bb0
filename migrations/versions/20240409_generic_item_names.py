"""Rename the first release's metadata names: quarantine `item_id`, jobs' `planning.items`."""

from __future__ import annotations

from pymongo.database import Database

from backfill_engine.item_names import ensure_item_names, restore_first_release_names
from migrations import Migration


class GenericItemNames(Migration):
    version = "20240409_generic_item_names"
    description = "quarantine entries keyed by item_id, jobs count planning.items"

    def up(self, db: Database) -> None:
        # A process of this release may have renamed already (it does so before its first
        # job): then this only confirms it.
        ensure_item_names(db, force=True)

    def down(self, db: Database) -> None:
        restore_first_release_names(db)
