"""docker-compose.yml is valid, scales workers, keeps Redis durable and Flower behind auth."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = shutil.which("docker-compose")

pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose (Debian package) is not installed on this machine"
)


def _config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    return subprocess.run(
        [str(COMPOSE), "-f", str(ROOT / "docker-compose.yml"), "config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        check=False,
    )


def test_compose_file_is_valid_with_every_role() -> None:
    result = _config("--services", FLOWER_BASIC_AUTH="ops:s3cret-pw")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        "mongo",
        "redis",
        "catalog",
        "worker",
        "flower",
        "orchestrator",
    }


def test_compose_keeps_redis_append_only_and_mongo_healthchecked() -> None:
    rendered = _config(FLOWER_BASIC_AUTH="ops:s3cret-pw").stdout
    assert "--appendonly" in rendered and "healthcheck" in rendered
    assert "backfill\n    - migrate\n    - up" in rendered or "- migrate" in rendered


def test_compose_refuses_flower_without_basic_auth() -> None:
    result = _config()
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr
