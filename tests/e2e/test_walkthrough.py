"""The README's "A team's project, file by file", run verbatim as a new team would.

The README is this test's input: its marked files are written unchanged into a project
outside this repository (beside the team's own `migrations/` and `workers/` packages),
this project is installed into a fresh virtual environment with pip, and the README's
commands run from the project's root against this test's database and Redis.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo.database import Database

from backfill_engine.settings import Settings

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
FILE_MARK = re.compile(r"<!-- file: (?P<path>\S+) -->\n```[a-z]*\n(?P<body>.*?)\n```", re.S)
COMMANDS_MARK = re.compile(r"<!-- commands: walkthrough -->\n```sh\n(?P<body>.*?)\n```", re.S)
# What the README's `export` line sets: the test gives its own servers under these names.
SERVER_VARIABLES = {"MONGO_URL", "MONGO_DB", "REDIS_URL"}
# Copied as an sdist would be, without the checkout's environment and build leftovers.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".backfill", "build", "*.egg-info", "__pycache__", ".*_cache", "docs"
)
COMMAND_TIMEOUT = 300
# The team's own packages of the names this project once used for its own.
TEAM_PACKAGES = {
    "migrations/__init__.py": "",
    "workers/__init__.py": "",
    "workers/pricing.py": "ROUNDING = 'half-even'  # the team's own module, unrelated to ours\n",
}


def readme_files(text: str) -> dict[str, str]:
    return {m["path"]: m["body"] + "\n" for m in FILE_MARK.finditer(text)}


def readme_commands(text: str) -> list[str]:
    match = COMMANDS_MARK.search(text)
    assert match, "README lost its <!-- commands: walkthrough --> block"
    lines = [line.split("  #")[0].strip() for line in match["body"].splitlines()]
    return [line for line in lines if line]


def test_the_readme_names_its_files_and_commands() -> None:
    text = README.read_text()
    files = readme_files(text)
    assert {"backfill.toml", "team_backfills.py"} <= set(files)
    assert any(p.startswith("migrations/") for p in files)
    assert any("backfill migrate up" in c for c in readme_commands(text))


@pytest.fixture
def team_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """A clean environment: nothing of this repository's settings leaks into the team's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BACKFILL_", "MONGO_", "REDIS_", "CATALOG_", "PYTHON", "VIRTUAL_ENV"))
    }
    assert settings.mongo_url and settings.redis_url
    source = tmp_path / "mongo-backfill-src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    env.update(
        MONGO_URL=settings.mongo_url,
        MONGO_DB=settings.mongo_db,
        REDIS_URL=settings.redis_url,
        BACKFILL_QUEUE=settings.queue,  # the shared Redis: this test's queue only
        MONGO_BACKFILL=str(source),
    )
    return env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "ourproject"
    assert not root.resolve().is_relative_to(REPO)
    for rel, body in {**TEAM_PACKAGES, **readme_files(README.read_text())}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body)
    return root


@pytest.fixture
def background(project: Path) -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _run(line: str, project: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-c", line],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"`{line}` exited {done.returncode}:\n{out[-3000:]}"
    return out


def test_a_team_project_runs_the_readme_walkthrough_verbatim(
    project: Path,
    team_env: dict[str, str],
    db: Database,
    background: list[subprocess.Popen],
    tmp_path: Path,
) -> None:
    items = db["items"]
    items.insert_many(
        [{"_id": i, "price": i + 0.25, "supplier_id": "A" if i % 2 else "B"} for i in range(30)]
    )
    db["suppliers"].insert_many([{"code": "A", "name": "Acme"}, {"code": "B", "name": "Bolt"}])
    outputs: dict[str, str] = {}
    for line in readme_commands(README.read_text()):
        if line.startswith("export "):
            names = {a.split("=", 1)[0] for a in shlex.split(line)[1:]}
            assert names == SERVER_VARIABLES, "the README exports what the test provides"
            continue
        if line.endswith("&"):
            log = (tmp_path / f"background-{len(background)}.log").open("w")
            background.append(
                subprocess.Popen(
                    ["bash", "-c", f"exec {line[:-1].strip()}"],
                    cwd=project,
                    env=team_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            continue
        outputs[line] = _run(line, project, team_env)
        for proc in background:
            assert proc.poll() is None, f"a background command exited: {proc.args}"

    status = next(out for line, out in outputs.items() if "migrate status" in line)
    version = next(Path(p).stem for p in readme_files(README.read_text()) if "migrations/" in p)
    assert version in status and "pending" in status
    assert "2024040" not in status, "this project's example migrations are not the team's"
    assert [d["_id"] for d in db["schema_migrations"].find({}, {"_id": 1})] == [version]
    assert "products" not in db.list_collection_names()

    for i in range(30):
        doc = items.find_one({"_id": i})
        assert doc["price_cents"] == round((i + 0.25) * 100)
        assert doc["name"] == ("Acme" if i % 2 else "Bolt")

    # The team's own `workers` and `migrations` packages and ours, in one interpreter.
    python = project / ".venv" / "bin" / "python"
    both = "import workers.pricing, migrations, backfill_workers.app, backfill_migrations.runner"
    _run(
        f"{python} -c '{both}; assert migrations.__file__.startswith(\"{project}\")'",
        project,
        team_env,
    )


def test_without_a_config_migrate_says_so_and_touches_nothing(
    tmp_path: Path, settings: Settings, db: Database
) -> None:
    bare = tmp_path / "no-config"
    (bare / "migrations").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "PYTHONPATH"))}
    assert settings.mongo_url
    env.update(MONGO_URL=settings.mongo_url, MONGO_DB=settings.mongo_db)
    backfill = str(Path(sys.executable).with_name("backfill"))
    for verb in (["status"], ["up"], ["down"], ["create", "x"]):
        done = subprocess.run(
            [backfill, "migrate", *verb], cwd=bare, env=env, capture_output=True, text=True
        )
        assert done.returncode == 1, (verb, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "no migrations directory is configured" in lines[0], lines
        assert "backfill.toml" in lines[0] and "BACKFILL_MIGRATIONS_DIR" in lines[0]
    assert list((bare / "migrations").iterdir()) == []
    assert db.list_collection_names() == []


def test_migrate_create_writes_into_the_projects_directory(tmp_path: Path) -> None:
    root = tmp_path / "ourproject"
    (root / "db" / "migrations").mkdir(parents=True)
    (root / "backfill.toml").write_text('migrations_dir = "db/migrations"\n')
    (root / "sub").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "PYTHONPATH"))}
    backfill = str(Path(sys.executable).with_name("backfill"))
    done = subprocess.run(
        [backfill, "migrate", "create", "add_sku_index"],
        cwd=root / "sub",
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (made,) = (root / "db" / "migrations").glob("*_add_sku_index.py")
    assert "from backfill_migrations import Migration" in made.read_text()


def test_a_team_migration_imports_the_teams_own_migrations_package(
    tmp_path: Path, settings: Settings, db: Database
) -> None:
    # `migrations` is the usual name of a team's package, and ours ships one for the
    # example: every `backfill` command must leave the name to the team's.
    root = tmp_path / "team"
    (root / "migrations").mkdir(parents=True)
    (root / "backfill.toml").write_text('migrations_dir = "migrations"\n')
    (root / "migrations" / "__init__.py").write_text("")
    (root / "migrations" / "_naming.py").write_text('SKU_INDEX = "team_sku_unique"\n')
    (root / "migrations" / "20250102_sku_index.py").write_text(
        "from backfill_migrations import Migration\n"
        "from migrations._naming import SKU_INDEX\n\n\n"
        "class SkuIndex(Migration):\n"
        "    def up(self, db, ctx=None):\n"
        "        db.items.create_index('sku', name=SKU_INDEX, unique=True)\n\n"
        "    def down(self, db, ctx=None):\n"
        "        db.items.drop_index(SKU_INDEX)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "PYTHONPATH"))}
    assert settings.mongo_url
    env.update(MONGO_URL=settings.mongo_url, MONGO_DB=settings.mongo_db)
    backfill = str(Path(sys.executable).with_name("backfill"))
    for verb in ("status", "up"):
        done = subprocess.run(
            [backfill, "migrate", verb], cwd=root, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, (verb, done.stdout, done.stderr)
        assert "20250102_sku_index" in done.stdout + done.stderr
        assert "2024040" not in done.stdout + done.stderr  # none of our examples
    assert "team_sku_unique" in db["items"].index_information()
