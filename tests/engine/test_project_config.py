"""The project config: found from the current directory upward, paths relative to it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from backfill_engine.project import ProjectConfigError, find_config, read_config
from backfill_engine.runtime import worker_definitions
from backfill_engine.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_backfill_toml_is_found_from_a_subdirectory_and_paths_are_relative_to_it(
    tmp_path: Path,
) -> None:
    config = _write(tmp_path / "backfill.toml", 'migrations_dir = "db/migrations"\nimports = ["a"]')
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_config(deep) == config.resolve()
    project = read_config(config)
    assert project.migrations_dir == (tmp_path / "db" / "migrations").resolve()
    assert project.imports == ("a",) and project.root == tmp_path.resolve()


def test_a_pyproject_without_our_table_is_someone_elses(tmp_path: Path) -> None:
    _write(tmp_path / "pyproject.toml", '[tool.mongo-backfill]\nmigrations_dir = "m"\n')
    inner = _write(tmp_path / "lib" / "pyproject.toml", '[project]\nname = "lib"\n')
    assert find_config(inner.parent) == (tmp_path / "pyproject.toml").resolve()


def test_nothing_is_assumed_without_a_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "empty"
    outside.mkdir()
    assert find_config(outside) is None, "a config file above the temporary directory"
    for name in ("BACKFILL_CONFIG", "BACKFILL_MIGRATIONS_DIR", "BACKFILL_IMPORTS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env(cwd=outside)
    assert settings.migrations_dir is None and settings.config_file is None
    assert "catalog" not in worker_definitions(settings)  # no fallback to our examples


def test_an_unknown_key_or_a_wrong_type_names_the_file(tmp_path: Path) -> None:
    bad = _write(tmp_path / "backfill.toml", 'migration_dir = "m"\n')
    with pytest.raises(ProjectConfigError, match=r"backfill.toml.*unknown key\(s\) migration_dir"):
        read_config(bad)
    _write(bad, "imports = 3\n")
    with pytest.raises(SettingsError, match="imports must be a list"):
        Settings.from_env({"BACKFILL_CONFIG": str(bad)})


def test_the_environment_wins_and_children_get_the_same_config(tmp_path: Path) -> None:
    config = _write(tmp_path / "backfill.toml", 'migrations_dir = "m"\nimports = "x, y"\n')
    from_file = Settings.from_env({"BACKFILL_CONFIG": str(config)})
    assert from_file.migrations_dir == str((tmp_path / "m").resolve())
    assert from_file.imports == ("x", "y")
    assert from_file.project_dir == str(tmp_path.resolve())
    assert Settings.from_env(from_file.to_env()) == from_file
    overridden = Settings.from_env(
        {"BACKFILL_CONFIG": str(config), "BACKFILL_MIGRATIONS_DIR": "/elsewhere"}
    )
    assert overridden.migrations_dir == "/elsewhere" and overridden.imports == ("x", "y")


def test_this_checkout_is_a_project_naming_its_example_migrations() -> None:
    project = read_config(REPO / "pyproject.toml")
    assert project.migrations_dir == REPO / "migrations" / "versions"


def test_the_project_root_makes_its_modules_importable(tmp_path: Path) -> None:
    _write(tmp_path / "backfill.toml", 'imports = ["walkthrough_defs_mod"]\n')
    _write(
        tmp_path / "walkthrough_defs_mod.py",
        "from backfill_engine import Backfill, FunctionSource\n"
        "B = Backfill(name='walkthrough-b', collection='c', source=FunctionSource(lambda d, p: {}),"
        " writes={'x': int})\n",
    )
    try:
        settings = Settings.from_env({"BACKFILL_CONFIG": str(tmp_path / "backfill.toml")})
        assert set(worker_definitions(settings)) == {"walkthrough-b"}
    finally:
        sys.modules.pop("walkthrough_defs_mod", None)
        sys.path.remove(str(tmp_path.resolve()))
