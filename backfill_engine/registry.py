"""Finding backfill definitions: the modules BACKFILL_IMPORTS names, and the migrations directory.

Like Celery's `imports`, a worker imports each module named in the setting and takes every
module-level `Backfill` it finds; it also loads the migration modules of the migrations
directory, so a backfill defined beside the migration that runs it needs no setting.
A worker takes only batches of backfills it knows (each backfill has its own queue).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

from backfill_engine.definition import Backfill
from backfill_engine.errors import BackfillError


class UnknownBackfillError(BackfillError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        listed = ", ".join(sorted(known)) or "none (set BACKFILL_IMPORTS)"
        super().__init__(f"unknown backfill {name!r}; known: {listed}")


class DefinitionImportError(BackfillError):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"cannot load backfill definitions from {where}: {problem}")


def definitions_in(module: ModuleType) -> list[Backfill]:
    """The module-level Backfill objects of `module`."""
    return [v for v in vars(module).values() if isinstance(v, Backfill)]


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # a team's module: report it as one line, whatever it raised
        raise DefinitionImportError(name, f"{type(exc).__name__}: {exc}") from None


def _migration_modules(directory: Path) -> list[ModuleType]:
    from migrations.discovery import discover

    try:
        loaded = discover(directory)
    except Exception as exc:
        raise DefinitionImportError(str(directory.name), f"{type(exc).__name__}: {exc}") from None
    return [sys.modules[type(m.migration).__module__] for m in loaded]


def load_definitions(
    imports: Iterable[str] = (), migrations_dir: Path | None = None
) -> dict[str, Backfill]:
    """Every definition found, by name; two different definitions of one name are an error."""
    from migrations.discovery import MIGRATIONS_DIR

    modules = [_import(name) for name in imports if name.strip()]
    modules += _migration_modules(migrations_dir or MIGRATIONS_DIR)
    found: dict[str, Backfill] = {}
    for module in modules:
        for backfill in definitions_in(module):
            seen = found.get(backfill.name)
            if seen is not None and seen is not backfill and seen != backfill:
                raise DefinitionImportError(
                    module.__name__, f"a second backfill named {backfill.name!r}"
                )
            found[backfill.name] = backfill
    return found


def lookup(definitions: Mapping[str, Backfill], name: str) -> Backfill:
    """The definition `name`, or UnknownBackfillError listing the known ones."""
    try:
        return definitions[name]
    except KeyError:
        raise UnknownBackfillError(name, definitions) from None


def queue_for(base_queue: str, backfill: str) -> str:
    """The broker queue of one backfill's batches: only workers that know it consume it."""
    return f"{base_queue}.{backfill}"
