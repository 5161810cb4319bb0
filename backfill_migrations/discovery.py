"""Load migration modules from a directory and register them.

Convention: a file `YYYYMMDD_slug.py` defines exactly one concrete `Migration` subclass (defined
in that module, not imported); discovery instantiates it with no arguments. Its `version`
attribute, when set, must equal the file name (catches copy-paste); when empty it is taken from
the file name. Files whose names start with `_` are helpers and are skipped; every other `.py`
file must be a well-named migration.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from backfill_migrations.errors import InvalidMigrationError, InvalidVersionFormatError
from backfill_migrations.plan import Available
from backfill_migrations.registry import Migration, Registry, validate_version


@dataclass(frozen=True)
class LoadedMigration:
    """A migration with the file it came from and the checksum of that file's source."""

    migration: Migration
    path: Path
    checksum: str

    @property
    def version(self) -> str:
        return self.migration.version

    def available(self) -> Available:
        return Available(self.version, self.migration.description, self.checksum)


def checksum(source: bytes) -> str:
    """sha256 of the module source; line endings normalised so a CRLF checkout is not drift."""
    return hashlib.sha256(source.replace(b"\r\n", b"\n")).hexdigest()


def _module_name(directory: Path, stem: str) -> str:
    # Unique per directory, so two migration directories in one process never collide.
    tag = hashlib.sha1(str(directory).encode()).hexdigest()[:10]
    return f"_backfill_migrations_{tag}.v{stem}"


def _load_module(path: Path, source: bytes) -> types.ModuleType:
    name = _module_name(path.parent, path.stem)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    # Registered before exec: dataclasses and typing look the module up by name.
    sys.modules[name] = module
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise InvalidMigrationError(
            path.name, f"import failed: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _migration_class(module: types.ModuleType, where: str) -> type[Migration]:
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Migration)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise InvalidMigrationError(
            where, f"expected exactly one Migration subclass, found {len(found)} ({names})"
        )
    return found[0]


def load_file(path: Path) -> LoadedMigration:
    """Import one migration file and instantiate its Migration subclass."""
    try:
        validate_version(path.stem)
    except InvalidVersionFormatError as exc:
        raise InvalidMigrationError(path.name, f"file name is not a version: {exc}") from None
    source = path.read_bytes()
    module = _load_module(path, source)
    cls = _migration_class(module, path.name)
    m = cls()
    if not m.version:
        m.version = path.stem
    elif m.version != path.stem:
        raise InvalidMigrationError(
            path.name, f"version {m.version!r} does not match the file name {path.stem!r}"
        )
    if not m.description:
        m.description = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
    return LoadedMigration(m, path, checksum(source))


def discover(directory: Path, registry: Registry | None = None) -> list[LoadedMigration]:
    """Load and register every migration in `directory`, by version."""
    directory = directory.resolve()
    if not directory.is_dir():
        raise InvalidMigrationError(str(directory), "migrations directory does not exist")
    loaded = [load_file(p) for p in sorted(directory.glob("*.py")) if not p.name.startswith("_")]
    # A fresh registry per load: discovery twice in one process is not a duplicate.
    (registry or Registry()).must_register(*(lm.migration for lm in loaded))
    return sorted(loaded, key=lambda lm: lm.version)
