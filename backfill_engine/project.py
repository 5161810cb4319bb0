"""A project's own config: where its migrations live and which modules hold its backfills.

Found as alembic finds its ini and ruff its pyproject: `BACKFILL_CONFIG` names the file;
otherwise the nearest `backfill.toml`, or `pyproject.toml` with a `[tool.mongo-backfill]`
table, from the current directory upward. Paths in it are relative to the file's directory,
the project root, which is also where the project's own modules are imported from:

    # backfill.toml (or the same keys under [tool.mongo-backfill] in pyproject.toml)
    migrations_dir = "migrations"
    imports = ["team_backfills"]

Environment variables win over the file (`BACKFILL_MIGRATIONS_DIR`, `BACKFILL_IMPORTS`).
Without a config and without those variables, nothing is assumed: `backfill migrate` says so,
and a worker knows only what `BACKFILL_IMPORTS` names.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_ENV = "BACKFILL_CONFIG"
CONFIG_FILE = "backfill.toml"
PYPROJECT_FILE = "pyproject.toml"
TOOL_TABLE = "mongo-backfill"  # [tool.mongo-backfill]
KEYS = ("migrations_dir", "imports")
HOW_TO_CONFIGURE = (
    f"set migrations_dir in {CONFIG_FILE} (or [tool.{TOOL_TABLE}] in {PYPROJECT_FILE}) "
    "at your project's root, or BACKFILL_MIGRATIONS_DIR"
)


class ProjectConfigError(ValueError):
    """A project config file we cannot use; the message names the file and the problem."""


@dataclass(frozen=True)
class ProjectConfig:
    """What a project's config file says, its paths made absolute."""

    path: Path  # the file itself
    migrations_dir: Path | None = None
    imports: tuple[str, ...] = ()

    @property
    def root(self) -> Path:
        """The project's root: the config file's directory."""
        return self.path.parent


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProjectConfigError(f"cannot read {path}: {exc}") from None


def _table(path: Path) -> dict[str, Any] | None:
    """The mongo-backfill keys of `path`; None for a pyproject.toml that has none."""
    data = _read_toml(path)
    if path.name != PYPROJECT_FILE:
        return data
    table = data.get("tool", {}).get(TOOL_TABLE)
    if table is not None and not isinstance(table, dict):
        raise ProjectConfigError(f"{path}: [tool.{TOOL_TABLE}] must be a table")
    return table


def find_config(start: Path) -> Path | None:
    """The nearest config file from `start` upward, or None."""
    start = start.resolve()
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
        pyproject = directory / PYPROJECT_FILE
        # A pyproject.toml without our table belongs to something else: look further up.
        if pyproject.is_file() and _table(pyproject) is not None:
            return pyproject
    return None


def read_config(path: Path) -> ProjectConfig:
    """Parse one config file; ProjectConfigError names an unknown key or a wrong type."""
    path = path.resolve()
    if not path.is_file():
        raise ProjectConfigError(f"project config {path} does not exist")
    table = _table(path) or {}
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ProjectConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})"
        )
    migrations_dir = table.get("migrations_dir")
    if migrations_dir is not None and not (isinstance(migrations_dir, str) and migrations_dir):
        raise ProjectConfigError(f"{path}: migrations_dir must be a path (a string)")
    imports = table.get("imports", [])
    if isinstance(imports, str):
        imports = imports.split(",")
    if not isinstance(imports, list) or not all(isinstance(m, str) for m in imports):
        raise ProjectConfigError(f"{path}: imports must be a list of module names")
    return ProjectConfig(
        path=path,
        migrations_dir=(path.parent / migrations_dir).resolve() if migrations_dir else None,
        imports=tuple(m.strip() for m in imports if m.strip()),
    )


def load_project(env: Mapping[str, str], cwd: Path | None = None) -> ProjectConfig | None:
    """The config `BACKFILL_CONFIG` names, else the nearest one from `cwd` upward, else None."""
    named = env.get(CONFIG_ENV)
    if named:
        return read_config(Path(named))
    found = find_config(cwd or Path.cwd())
    return read_config(found) if found else None


def put_on_path(directory: str | Path | None) -> None:
    """Make a project's own modules importable in this process (first, as `python -m` does)."""
    if not directory:
        return
    entry = str(Path(directory).resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)
