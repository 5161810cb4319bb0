"""docker-compose.yml: every role present, workers scale, Redis durable, Flower behind auth.

Read with PyYAML and checked against the Compose rules that matter here (variable
interpolation included), so the checks run on any machine, Docker or not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# Keys a Compose service may have that this file could plausibly use; a typo fails.
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "volumes",
    "ports", "depends_on", "healthcheck", "restart", "deploy", "networks", "labels",
    "user", "working_dir", "stop_grace_period", "stop_signal", "expose", "init",
}  # fmt: skip
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (unset or empty)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        current = env.get(name, "")
        if current:
            return current
        if op == ":?":
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        return arg if op == ":-" else ""

    return _VAR.sub(one, value)


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _environment(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    raw = service.get("environment") or {}
    return {k: interpolate(str(v), env) for k, v in raw.items()}


def test_compose_file_has_every_role_and_only_known_keys() -> None:
    services = _compose()["services"]
    assert set(services) == {
        "mongo", "redis", "catalog", "worker", "flower", "metrics", "orchestrator"
    }  # fmt: skip
    for name, service in services.items():
        unknown = set(service) - SERVICE_KEYS
        assert not unknown, f"{name}: unknown keys {unknown}"
        assert "image" in service or "build" in service, name


def test_workers_scale_and_share_one_configuration() -> None:
    services = _compose()["services"]
    worker = services["worker"]
    # `--scale worker=N` needs no fixed container name and no host port per replica.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:4] == ["celery", "-A", "backfill_workers.app", "worker"]
    env = _environment(worker, {})
    assert env["MONGO_URL"].startswith("mongodb://mongo:")
    assert env["REDIS_URL"].startswith("redis://redis:")
    # Workers, Flower and the orchestrator read the same settings.
    for other in ("flower", "metrics", "orchestrator"):
        shared = _environment(services[other], {"FLOWER_BASIC_AUTH": "ops:pw"})
        assert {k: shared[k] for k in env} == env


def test_compose_keeps_redis_append_only_and_waits_for_healthy_servers() -> None:
    services = _compose()["services"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert "healthcheck" in services["mongo"] and "healthcheck" in services["redis"]
    for name in ("worker", "orchestrator"):
        deps = services[name]["depends_on"]
        assert deps["mongo"]["condition"] == deps["redis"]["condition"] == "service_healthy"
    assert services["orchestrator"]["command"] == ["backfill", "migrate", "up"]


def test_compose_refuses_flower_without_basic_auth() -> None:
    flower = _compose()["services"]["flower"]
    with pytest.raises(MissingVariable, match="FLOWER_BASIC_AUTH"):
        _environment(flower, {})
    with pytest.raises(MissingVariable, match="FLOWER_BASIC_AUTH"):
        _environment(flower, {"FLOWER_BASIC_AUTH": ""})
    assert _environment(flower, {"FLOWER_BASIC_AUTH": "ops:pw"})["FLOWER_BASIC_AUTH"] == "ops:pw"
    # Published on loopback only, whatever the auth.
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"])


def test_secrets_are_never_written_into_the_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name in ("CATALOG_TOKEN", "FLOWER_BASIC_AUTH"):
        for m in re.finditer(rf"{name}:\s*(\S+)", text):
            assert m.group(1).startswith("${"), f"{name} has a literal value"


def test_metrics_endpoint_reads_the_same_database_and_is_published_on_loopback() -> None:
    metrics = _compose()["services"]["metrics"]
    assert metrics["command"][:2] == ["backfill", "metrics"]
    port = metrics["command"][metrics["command"].index("--port") + 1]
    assert metrics["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert metrics["depends_on"]["mongo"]["condition"] == "service_healthy"
