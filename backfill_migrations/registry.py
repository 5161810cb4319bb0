"""The `Migration` interface, version rules and the in-process registry of migrations."""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from backfill_migrations.errors import (
    InvalidVersionFormatError,
    MigrationNilError,
    MigrationRegisteredError,
)

VERSION_PATTERN = re.compile(r"\d{8}(?:_[a-z0-9_]+)*")  # fullmatch: `$` admits a final \n

log = logging.getLogger(__name__)


def validate_version(version: str) -> str:
    """Return `version` if it is `YYYYMMDD[_slug]` with a real date, else raise."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise InvalidVersionFormatError(str(version))
    try:
        dt.datetime.strptime(version[:8], "%Y%m%d")
    except ValueError:
        raise InvalidVersionFormatError(version, f"{version[:8]} is not a real date") from None
    return version


def _log_to_logger(message: str) -> None:
    log.info("%s", message)


@dataclass
class MigrationContext:
    """What the runner hands to a migration whose up()/down() accepts a `ctx` argument."""

    version: str
    log: Callable[[str], None] = _log_to_logger
    settings_factory: Callable[[], Any] | None = field(default=None, repr=False)
    check_lock: Callable[[], None] = field(default=lambda: None, repr=False)
    _settings: Any = field(default=None, repr=False)

    @property
    def settings(self) -> Any:
        """The resolved engine Settings, built on first use (may start servers)."""
        if self._settings is None and self.settings_factory is not None:
            self._settings = self.settings_factory()
        return self._settings


class Migration(ABC):
    """One schema or data change: a version, a description and reversible up/down steps.

    Subclasses may declare `up(self, db, ctx=None)` / `down(self, db, ctx=None)` to receive a
    MigrationContext (settings, a progress `log`, `check_lock()`); plain `up(self, db)` works too.
    """

    version: str = ""
    description: str = ""

    @abstractmethod
    def up(self, db: Database) -> None:
        """Apply the change."""

    @abstractmethod
    def down(self, db: Database) -> None:
        """Undo the change."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.version}>"


@dataclass(frozen=True)
class MigrationMetadata:
    """How the last run of a version went."""

    execution_time: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class MigrationStatus:
    """Where one version stands; `state` refines `applied` (pending, failed, drifted, ...)."""

    version: str
    description: str
    applied: bool
    applied_at: dt.datetime | None = None
    state: str = "pending"
    checksum_drift: bool = False
    out_of_order: bool = False
    metadata: MigrationMetadata | None = None


Filter = Callable[[str, Migration], bool]


class Registry:
    """Versions to migrations; the runner builds a fresh one per migrations directory."""

    def __init__(self) -> None:
        self._by_version: dict[str, Migration] = {}
        self._mutex = threading.Lock()

    def _check(self, m: Migration | None, seen: set[str]) -> str:
        if m is None:
            raise MigrationNilError()
        version = validate_version(m.version)
        if version in self._by_version or version in seen:
            raise MigrationRegisteredError(version)
        return version

    def register(self, m: Migration | None) -> None:
        """Add one migration; raise if it is None, badly versioned, or a duplicate."""
        with self._mutex:
            version = self._check(m, set())
            assert m is not None
            self._by_version[version] = m

    def must_register(self, *ms: Migration | None) -> None:
        """Add several migrations all-or-nothing: on any error none of them is registered."""
        with self._mutex:
            seen: set[str] = set()
            for m in ms:
                seen.add(self._check(m, seen))
            for m in ms:
                assert m is not None
                self._by_version[m.version] = m

    def registered(self) -> dict[str, Migration]:
        """A copy of version -> migration."""
        with self._mutex:
            return dict(self._by_version)

    def get(self, *filters: Filter) -> list[Migration]:
        """Migrations in version order that pass every filter `(version, migration) -> bool`."""
        items = sorted(self.registered().items())
        return [m for v, m in items if all(f(v, m) for f in filters)]


_default = Registry()


def register(m: Migration | None) -> None:
    """Register `m` in the process-wide registry."""
    _default.register(m)


def must_register(*ms: Migration | None) -> None:
    """Register several migrations in the process-wide registry, all or nothing."""
    _default.must_register(*ms)


def registered_migrations() -> dict[str, Migration]:
    """A copy of the process-wide registry (version -> migration)."""
    return _default.registered()


def get_migrations(*filters: Filter) -> list[Migration]:
    """Process-wide registered migrations in version order, filtered."""
    return _default.get(*filters)


def reset_registry() -> None:
    """Empty the process-wide registry (for tests and embedding)."""
    global _default
    _default = Registry()
