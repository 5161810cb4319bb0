"""ensure_collection: create a collection or bring an existing one's options in line (collMod)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from backfill_engine import ddl
from backfill_engine.schema import ENGINE_COLLECTIONS, ensure_schema
from backfill_migrations.schema import SchemaBuilder

VALIDATION_LEVELS = ("off", "strict", "moderate")
VALIDATION_ACTIONS = ("error", "warn")

CollectionOption = Callable[[dict[str, Any]], None]


def with_validator(validator: SchemaBuilder | Mapping[str, Any]) -> CollectionOption:
    """Set the collection validator (a schema() builder or a raw validator document)."""
    doc = validator.build() if isinstance(validator, SchemaBuilder) else dict(validator)

    def apply(options: dict[str, Any]) -> None:
        options["validator"] = doc

    return apply


def with_validation_level(level: str) -> CollectionOption:
    """Set validationLevel: off, strict or moderate."""
    if level not in VALIDATION_LEVELS:
        raise ValueError(f"validation level must be one of {VALIDATION_LEVELS}, got {level!r}")

    def apply(options: dict[str, Any]) -> None:
        options["validationLevel"] = level

    return apply


def with_validation_action(action: str) -> CollectionOption:
    """Set validationAction: error (reject) or warn (log only)."""
    if action not in VALIDATION_ACTIONS:
        raise ValueError(f"validation action must be one of {VALIDATION_ACTIONS}, got {action!r}")

    def apply(options: dict[str, Any]) -> None:
        options["validationAction"] = action

    return apply


def ensure_collection(db: Database, name: str, *opts: CollectionOption) -> Collection:
    """Create `name` with the options, or apply them to the existing collection; idempotent.

    Errors are never swallowed, except the "already exists" race, which falls through to collMod.
    One of the engine's own collections is first set up by the engine, whole (migration
    20240405, whose source its checksum freezes, runs the engine's code this way).
    """
    options: dict[str, Any] = {}
    for opt in opts:
        opt(options)
    if name in ENGINE_COLLECTIONS:
        ensure_schema(db, force=True)
    return ddl.ensure_collection(db, name, options)
