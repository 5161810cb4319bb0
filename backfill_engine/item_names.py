"""What migration 20240409 calls: the item-name upgrade and its way back, both in schema.py.

The rename itself lives in `backfill_engine.schema` with the rest of the engine's layout;
these two names stay because the migration's source (and so its checksum) names them.
"""

from __future__ import annotations

from pymongo.database import Database

from backfill_engine.schema import downgrade_to_first_release, ensure_schema


def ensure_item_names(db: Database, *, force: bool = False) -> bool:
    """Bring the metadata to this release's item names (20240409 up); always True.

    The migration's `up` is a deliberate move forward: it also upgrades a database that
    20240409 `down` took back to the first release's names.
    """
    ensure_schema(db, force=force, upgrade_from_down=True)
    return True


def restore_first_release_names(db: Database) -> None:
    """The way back (migration 20240409 down), for a rollback to a first-release build."""
    downgrade_to_first_release(db)
