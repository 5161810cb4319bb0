"""`backfill migrate ...` in a child process: output, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest
from pymongo.database import Database

from backfill_engine.settings import Settings
from orchestrator.stack import free_port
from tests.migrations.mig_helpers import MigrationDir, child_env, effects, run_cli, snapshot

V1, V2 = "20240401_one", "20240402_two"


def assert_one_line_error(result, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_status_up_and_exit_code(db: Database, mdir: MigrationDir, settings: Settings) -> None:
    mdir.add(V1)
    mdir.add(V2)
    env = child_env(settings)
    d = ["--dir", str(mdir.path)]
    pending = run_cli(["migrate", "status", "--exit-code", *d], env)
    assert pending.returncode == 3, pending.stderr
    assert V1 in pending.stdout and "pending" in pending.stdout

    dry = run_cli(["migrate", "up", "--dry-run", *d], env)
    assert dry.returncode == 0, dry.stderr
    assert V1 in dry.stdout and V2 in dry.stdout and "dry run" in dry.stdout
    assert snapshot(db) == ([], [], [])

    up = run_cli(["migrate", "up", *d], env)
    assert up.returncode == 0, up.stderr
    assert f"applied {V2}" in up.stdout
    assert effects(db, V1)["up"] == effects(db, V2)["up"] == 1

    clean = run_cli(["migrate", "status", "--exit-code", "--json", *d], env)
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert [m["state"] for m in report["migrations"]] == ["applied", "applied"]
    assert report["needs_attention"] is False

    down = run_cli(["migrate", "down", "--steps", "2", *d], env)
    assert down.returncode == 0, down.stderr
    assert effects(db, V1)["down"] == 1


def test_unknown_target_is_one_line(db: Database, mdir: MigrationDir, settings: Settings) -> None:
    mdir.add(V1)
    result = run_cli(
        ["migrate", "up", "--to", "20990101_nope", "--dir", str(mdir.path)], child_env(settings)
    )
    assert_one_line_error(result, "unknown migration version", "20990101_nope")
    assert db.list_collection_names() == []


def test_failed_migration_is_one_line_and_blocks(
    db: Database, mdir: MigrationDir, settings: Settings
) -> None:
    mdir.add(V1, up='raise RuntimeError("disk on fire [bold]")')  # not rich markup
    env, d = child_env(settings), ["--dir", str(mdir.path)]
    assert_one_line_error(run_cli(["migrate", "up", *d], env), V1, "disk on fire")
    assert_one_line_error(run_cli(["migrate", "up", *d], env), "--retry", "mark-applied")
    status = run_cli(["migrate", "status", "--exit-code", *d], env)
    assert status.returncode == 3 and "disk on fire [bold]" in status.stdout
    marked = run_cli(["migrate", "mark-applied", V1, *d], env)
    assert marked.returncode == 0, marked.stderr
    assert run_cli(["migrate", "status", "--exit-code", *d], env).returncode == 0


def test_create_writes_from_template_and_rejects_bad_slugs(
    mdir: MigrationDir, settings: Settings
) -> None:
    env = child_env(settings)
    good = run_cli(["migrate", "create", "add_sku_index", "--dir", str(mdir.path)], env)
    assert good.returncode == 0, good.stderr
    [path] = mdir.path.glob("*_add_sku_index.py")
    assert str(path) in good.stdout
    assert 'version = "' + path.stem + '"' in path.read_text()
    for bad in ("Add-Index", "add index", "_"):
        result = run_cli(["migrate", "create", bad, "--dir", str(mdir.path)], env)
        assert_one_line_error(result, "invalid migration version")
    assert len(list(mdir.path.iterdir())) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["add_index\n"], "invalid migration version"),
        (["add_index", "--description", "first line\nsecond line"], "U+000A"),
        (["add_index", "--description", "ends in a carriage return\r"], "U+000D"),
        (["add_index", "--description", "tab\tinside"], "U+0009"),
        (["add_index", "--description", "line\u2028separator"], "U+2028"),
    ],
)
def test_create_refuses_a_newline_or_control_character(
    mdir: MigrationDir, settings: Settings, args: list[str], needle: str
) -> None:
    result = run_cli(["migrate", "create", *args, "--dir", str(mdir.path)], child_env(settings))
    assert_one_line_error(result, needle)
    assert list(mdir.path.iterdir()) == [], "a module was written"


def test_a_created_migration_with_quotes_and_backslashes_still_loads(
    db: Database, mdir: MigrationDir, settings: Settings
) -> None:
    env, d = child_env(settings), ["--dir", str(mdir.path)]
    description = 'copy C:\\new\\ to "quoted" \\N{x} \\'
    made = run_cli(["migrate", "create", "odd_text", "--description", description, *d], env)
    assert made.returncode == 0, made.stderr
    status = run_cli(["migrate", "status", *d], env)
    assert status.returncode == 0, status.stderr
    assert "quoted" in status.stdout


def test_unreachable_mongo_is_one_line_with_password_redacted(mdir: MigrationDir) -> None:
    url = f"mongodb://u:s3cret@127.0.0.1:{free_port()}/"
    env = child_env_without_server(url)
    result = run_cli(["migrate", "status", "--dir", str(mdir.path)], env)
    assert_one_line_error(result, "mongodb://u:***@127.0.0.1")
    assert "s3cret" not in result.stderr + result.stdout


def child_env_without_server(url: str) -> dict[str, str]:
    env = child_env(Settings(mongo_url=url))
    env["MONGO_URL"] = url
    return env
