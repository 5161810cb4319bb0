"""Finding backfill definitions: the modules BACKFILL_IMPORTS names, and the migrations directory.

Like Celery's `imports`, a worker imports each module named in the setting and takes every
module-level `Backfill` it finds; it also loads the migration modules of the project's
migrations directory, so a backfill defined beside the migration that runs it needs no
setting. Nothing is found by default: with neither, a worker knows no backfill (this
project's example migrations are found only where its own config names them).
A worker takes only batches of backfills it knows and has the settings for; it sends any
other batch back to the shared queue for a worker that can run it (hooks/failure.py).
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

from backfill_engine.definition import Backfill
from backfill_engine.errors import BackfillError
from backfill_engine.project import put_on_path


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
    """Execute each migration file (names starting with `_` are helpers) for its definitions.

    Loaded here under names of their own, not through the migration framework: the engine
    needs only the module-level Backfill objects, and imports nothing from the layers above.
    """
    if not directory.is_dir():
        raise DefinitionImportError(str(directory), "migrations directory does not exist")
    tag = hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:10]
    modules = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        name = f"_backfill_definitions_{tag}.v{path.stem}"
        module = ModuleType(name)
        module.__file__ = str(path)
        sys.modules[name] = module  # before exec: dataclasses look the module up by name
        try:
            exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
        except Exception as exc:  # a team's migration: one line, whatever it raised
            sys.modules.pop(name, None)
            raise DefinitionImportError(path.name, f"{type(exc).__name__}: {exc}") from None
        modules.append(module)
    return modules


def load_definitions(
    imports: Iterable[str] = (),
    migrations_dir: Path | None = None,
    project_dir: str | Path | None = None,
) -> dict[str, Backfill]:
    """Every definition found, by name; two different definitions of one name are an error.

    `project_dir` (the project's root) is made importable first: its migration files import
    the project's own modules.
    """
    put_on_path(project_dir)
    modules = [_import(name) for name in imports if name.strip()]
    if migrations_dir is not None:
        modules += _migration_modules(migrations_dir)
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
