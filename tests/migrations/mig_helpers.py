"""Helpers for migration tests: throw-away migration directories and runner subprocesses.

A plain module (not conftest) so test files can import it by its unique name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_migrations.runner import RunnerConfig

REPO = Path(__file__).resolve().parents[2]

MODULE = '''"""{description}"""

import time  # noqa: F401  (some bodies sleep)

from backfill_migrations import Migration


class Step(Migration):
    version = "{version}"
    description = "{description}"

    def up(self, db{ctx}):
{up}

    def down(self, db{ctx}):
{down}
'''


def count_body(version: str, field: str) -> str:
    """A body that records, in `effects`, how many times it ran."""
    inc = f'{{"$inc": {{"{field}": 1}}}}'
    return f'db.effects.update_one({{"_id": "{version}"}}, {inc}, upsert=True)'


class MigrationDir:
    """A temporary migrations directory whose modules count their runs in `db.effects`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(
        self,
        version: str,
        up: str | None = None,
        down: str | None = None,
        *,
        description: str | None = None,
        ctx: bool = False,
    ) -> Path:
        text = MODULE.format(
            version=version,
            description=description or f"test migration {version}",
            ctx=", ctx=None" if ctx else "",
            up=textwrap.indent(up or count_body(version, "up"), " " * 8),
            down=textwrap.indent(down or count_body(version, "down"), " " * 8),
        )
        path = self.path / f"{version}.py"
        path.write_text(text)
        return path

    def config(self, **overrides: object) -> RunnerConfig:
        base: dict[str, object] = {"directory": self.path, "lock_wait_seconds": 5.0}
        base.update(overrides)
        return RunnerConfig(**base)  # type: ignore[arg-type]


def effects(db: Database, version: str) -> dict[str, int]:
    """How many times `version`'s up and down ran."""
    doc = db.effects.find_one({"_id": version}) or {}
    return {"up": doc.get("up", 0), "down": doc.get("down", 0)}


def snapshot(db: Database) -> tuple[list[str], list[dict], list[dict]]:
    """Everything a dry run must leave untouched: collections, history and lock documents."""
    return (
        sorted(db.list_collection_names()),
        list(db.schema_migrations.find().sort("_id", 1)),
        list(db.schema_migrations_lock.find()),
    )


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a child process talking to the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGO_", "MIGRATION_"))}
    env.update(settings.to_env())
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


# A runner process without the CLI: `python -c RUNNER_SCRIPT DIR [--retry]`.
RUNNER_SCRIPT = """
import sys
from pathlib import Path
import pymongo
from backfill_migrations import runner
from backfill_engine.settings import Settings

s = Settings.from_env()
db = pymongo.MongoClient(s.mongo_url)[s.mongo_db]
cfg = runner.RunnerConfig.from_settings(
    s, directory=Path(sys.argv[1]), log=lambda m: print(m, flush=True)
)
result = runner.up(db, cfg, retry="--retry" in sys.argv)
print("done", len(result.done), flush=True)
"""


def start_runner(
    settings: Settings, directory: Path, *args: str, **env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER_SCRIPT, str(directory), *args],
        env=child_env(settings, **env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(
    args: Sequence[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`backfill ARGS` in a child process (the real entry point, error mapping included)."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
