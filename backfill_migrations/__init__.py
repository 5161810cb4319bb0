"""Ordered, locked, checksummed MongoDB schema migrations.

Write a migration as one `Migration` subclass in a dated module `YYYYMMDD_slug.py` of your
project's migrations directory (`backfill migrate create SLUG` writes one), then run it with
`backfill migrate up` or `backfill_migrations.runner.up(db, RunnerConfig(directory=...))`.
Named apart from `migrations`, the name most projects give their own migrations folder.
"""

from .collections import ensure_collection as ensure_collection
from .collections import with_validation_action as with_validation_action
from .collections import with_validation_level as with_validation_level
from .collections import with_validator as with_validator
from .discovery import discover as discover
from .errors import InvalidDescriptionError as InvalidDescriptionError
from .errors import InvalidMigrationError as InvalidMigrationError
from .errors import InvalidVersionFormatError as InvalidVersionFormatError
from .errors import LockError as LockError
from .errors import LockLostError as LockLostError
from .errors import LockTimeoutError as LockTimeoutError
from .errors import MigrationBlockedError as MigrationBlockedError
from .errors import MigrationError as MigrationError
from .errors import MigrationFailedError as MigrationFailedError
from .errors import MigrationNilError as MigrationNilError
from .errors import MigrationRegisteredError as MigrationRegisteredError
from .errors import MissingMigrationFileError as MissingMigrationFileError
from .errors import NoMigrationsDirError as NoMigrationsDirError
from .errors import PreconditionFailedError as PreconditionFailedError
from .errors import UnknownTargetError as UnknownTargetError
from .indexes import IndexBuilder as IndexBuilder
from .indexes import asc as asc
from .indexes import create_indexes as create_indexes
from .indexes import desc as desc
from .indexes import drop_indexes as drop_indexes
from .indexes import index as index
from .indexes import text as text
from .plan import MigrationState as MigrationState
from .registry import Migration as Migration
from .registry import MigrationContext as MigrationContext
from .registry import MigrationMetadata as MigrationMetadata
from .registry import MigrationStatus as MigrationStatus
from .registry import Registry as Registry
from .registry import get_migrations as get_migrations
from .registry import must_register as must_register
from .registry import register as register
from .registry import registered_migrations as registered_migrations
from .registry import validate_version as validate_version
from .runner import RunnerConfig as RunnerConfig
from .schema import SchemaBuilder as SchemaBuilder
from .schema import schema as schema

__all__ = [  # noqa: RUF022 (grouped by topic, sorted within a group)
    # Migrations and the registry
    "Migration",
    "MigrationContext",
    "MigrationMetadata",
    "MigrationState",
    "MigrationStatus",
    "Registry",
    "get_migrations",
    "must_register",
    "register",
    "registered_migrations",
    "validate_version",
    # Collections, validators and indexes
    "IndexBuilder",
    "SchemaBuilder",
    "asc",
    "create_indexes",
    "desc",
    "drop_indexes",
    "ensure_collection",
    "index",
    "schema",
    "text",
    "with_validation_action",
    "with_validation_level",
    "with_validator",
    # Discovery and running (verbs: backfill_migrations.runner.status/up/down/mark_applied/create)
    "RunnerConfig",
    "discover",
    # Errors
    "InvalidDescriptionError",
    "InvalidMigrationError",
    "InvalidVersionFormatError",
    "LockError",
    "LockLostError",
    "LockTimeoutError",
    "MigrationBlockedError",
    "MigrationError",
    "MigrationFailedError",
    "MigrationNilError",
    "MigrationRegisteredError",
    "MissingMigrationFileError",
    "NoMigrationsDirError",
    "PreconditionFailedError",
    "UnknownTargetError",
]
