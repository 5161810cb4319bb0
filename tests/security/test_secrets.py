"""Passwords in MONGO_URL/REDIS_URL, CATALOG_TOKEN and Flower's password never show anywhere.

A whole system runs with every credential set: SecantusDB with a real user (SCRAM), a
private Redis with `requirepass`, a catalog that demands a token, Flower with basic auth.
Then every place a person or a log could read is grepped for each secret.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import click
import pymongo
import pytest
import requests

from backfill_engine.redact import RedactingFilter, redact_text, redact_url
from backfill_engine.settings import Settings
from orchestrator.cli import cli
from orchestrator.cli import main as cli_main
from orchestrator.stack import ManagedProcess, free_port, start_flower, start_redis
from orchestrator.stack_cli import flower_auth_problem
from tests.harness import FAST, System, seed_products

MONGO_PASSWORD = "mongoPw-Secret-5150"
REDIS_PASSWORD = "redisPw-Secret-2112"
CATALOG_TOKEN = "catalogTok-Secret-1984"
FLOWER_PASSWORD = "flowerPw-Secret-7777"
SECRETS = (MONGO_PASSWORD, REDIS_PASSWORD, CATALOG_TOKEN, FLOWER_PASSWORD)
CLI_TIMEOUT = 240.0


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {where}"


@pytest.fixture
def mongo_user(mongo_client: pymongo.MongoClient) -> Iterator[str]:
    """A SCRAM user on the session SecantusDB (which checks credentials it is given)."""
    name = f"backfill_{uuid.uuid4().hex[:8]}"
    mongo_client.admin.command("createUser", name, pwd=MONGO_PASSWORD, roles=["root"])
    yield name
    mongo_client.admin.command("dropUser", name)


@pytest.fixture
def secured(
    settings: Settings,
    mongo_client: pymongo.MongoClient,
    mongo_user: str,
    tmp_path: Path,
) -> Iterator[tuple[System, ManagedProcess]]:
    """A system whose every URL and token carries a secret, with Flower watching."""
    log_dir = tmp_path / "logs"
    rds = start_redis(log_dir=log_dir, password=REDIS_PASSWORD)
    assert settings.mongo_url
    host = settings.mongo_url.split("://", 1)[1].split("/", 1)[0]
    mongo_url = (
        f"mongodb://{mongo_user}:{MONGO_PASSWORD}@{host}/?directConnection=true&authSource=admin"
    )
    s = replace(
        settings,
        **FAST,
        mongo_url=mongo_url,
        redis_url=rds.url,
        flower_basic_auth=f"ops:{FLOWER_PASSWORD}",
    ).with_source_env(CATALOG_TOKEN=CATALOG_TOKEN)
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    system = System(settings=s, db=client[s.mongo_db], log_dir=log_dir)
    flower: ManagedProcess | None = None
    try:
        # Transient catalog errors and hostile items make the workers log retries and quarantine.
        system.start_catalog(
            "--error-rate", "0.5", "--hostile-rate", "0.05", "--huge-chars", "20000",
            token=CATALOG_TOKEN,
        )  # fmt: skip
        system.settings = system.settings.with_source_env(CATALOG_TOKEN=CATALOG_TOKEN)
        system.migrate()
        flower = start_flower(system.settings, log_dir=log_dir, port=free_port())
        yield system, flower
    finally:
        system.close()
        if flower:
            flower.stop()
        client.drop_database(s.mongo_db)
        client.close()
        rds.stop()


def run_cli(system: System, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "MONGO_"))}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env={**base, **system.settings.to_env(), **env},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def test_no_secret_in_logs_cli_output_errors_or_flower(
    secured: tuple[System, ManagedProcess],
) -> None:
    system, flower = secured
    seed_products(system.db, 600)
    system.start_workers(2)

    seen: dict[str, str] = {}
    run = run_cli(system, "-v", "run", "catalog", "--wait", "--json")
    seen["run --wait"] = run.stdout + run.stderr
    assert run.returncode == 3, run.stderr  # completed_with_errors: hostile items quarantined
    job_id = json.loads(run.stdout)["job"]["_id"]
    for args in (
        ["status", job_id, "--json"],
        ["status", job_id],
        ["jobs", "--json"],
        ["jobs"],
        ["quarantine", job_id, "--json"],
        ["verify", job_id],
        ["migrate", "status"],
    ):
        proc = run_cli(system, *args)
        assert proc.returncode == 0, proc.stderr
        seen[" ".join(args)] = proc.stdout + proc.stderr

    # Error messages that name the servers we talk to.
    assert system.settings.redis_url and system.settings.mongo_url
    wrong_redis = system.settings.redis_url.replace(REDIS_PASSWORD, "not-" + REDIS_PASSWORD)
    wrong_mongo = system.settings.mongo_url.replace(MONGO_PASSWORD, "not-" + MONGO_PASSWORD)
    closed_mongo = system.settings.mongo_url.rsplit(":", 1)[0] + f":{free_port()}/"
    for name, env in {
        "wrong redis password": {"REDIS_URL": wrong_redis},
        "wrong mongo password": {"MONGO_URL": wrong_mongo},
        "mongo down": {"MONGO_URL": closed_mongo},
        "wrong catalog token": {"CATALOG_TOKEN": "x" + CATALOG_TOKEN},
    }.items():
        proc = run_cli(system, "run", "catalog", **env)
        assert proc.returncode != 0 and proc.stderr.startswith("error:"), (name, proc.stderr)
        seen[f"error: {name}"] = proc.stdout + proc.stderr

    # Flower: the API demands the password, and task arguments carry only ids.
    api = f"{flower.url}/api"
    assert requests.get(f"{api}/tasks", timeout=10).status_code == 401
    auth = ("ops", FLOWER_PASSWORD)
    tasks = requests.get(f"{api}/tasks", auth=auth, timeout=10)
    assert tasks.status_code == 200
    assert tasks.json(), "Flower saw no task: the check below would prove nothing"
    # Named `batch N/M of <job>` (Celery's shadow name): only ids, never data or credentials.
    # (Flower hears every queue on this Redis: only this test's tasks are checked.)
    ours = [t for t in tasks.json().values() if job_id in str(t.get("args"))]
    assert ours, "no task of this test's queue in Flower"
    # (A task Flower saw only as received may carry the task's own name.)
    names = [str(t["name"]) for t in ours]
    shadow = r"batch \d+/(\d+|\?) of [\w-]+"
    assert all(re.fullmatch(shadow, n) or n == "backfill.batch" for n in names), names
    assert any(re.fullmatch(shadow, n) for n in names), names
    seen["flower /api/tasks"] = tasks.text
    workers = requests.get(f"{api}/workers", params={"refresh": "1"}, auth=auth, timeout=30)
    seen["flower /api/workers"] = workers.text

    for path in sorted(system.log_dir.glob("*.log")):
        if path.name.startswith(("w", "flower")):
            seen[f"log {path.name}"] = path.read_text(errors="replace")
    for where, text in seen.items():
        assert_no_secret(where, text)
    worker_logs = "".join(v for k, v in seen.items() if k.startswith("log w"))
    # The logs did talk about the servers and the retries: redacted, not silent.
    assert "redis://:***@" in worker_logs or ":**@" in worker_logs
    assert "retry" in worker_logs.lower() or "HTTP 5" in worker_logs


def test_flower_refuses_to_listen_beyond_loopback_without_auth(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "FLOWER_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "flower", "--address", "0.0.0.0"],
        env={**env, "BACKFILL_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: refusing to expose Flower on 0.0.0.0 without auth: "
        "set FLOWER_BASIC_AUTH=user:password or bind to 127.0.0.1"
    ]
    assert not list(tmp_path.iterdir()), "nothing may be started before refusing"
    assert flower_auth_problem("::", None) and flower_auth_problem("10.0.0.5", "ops:")
    assert flower_auth_problem("127.0.0.1", None) is None
    assert flower_auth_problem("0.0.0.0", "ops:pw") is None


USER_AS_SECRET = "secretUser-Token-4242"
QUERY_TOKEN = "queryTok-Secret-3131"
AWS_TOKEN = "awsSession-Secret-9090"


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        (f"mongodb://{USER_AS_SECRET}@db.example:27017/app", USER_AS_SECRET),
        (f"https://{USER_AS_SECRET}@catalog.example/api", USER_AS_SECRET),
        (f"https://catalog.example/api?region=eu&token={QUERY_TOKEN}", QUERY_TOKEN),
        (f"https://catalog.example/api?api_key={QUERY_TOKEN}&x=1", QUERY_TOKEN),
        (f"mongodb://db.example/?authSource=admin&password={QUERY_TOKEN}", QUERY_TOKEN),
        (
            "mongodb://db.example/?authMechanism=MONGODB-AWS"
            f"&authMechanismProperties=AWS_SESSION_TOKEN:{AWS_TOKEN}",
            AWS_TOKEN,
        ),
    ],
)
def test_user_name_and_query_string_credentials_are_redacted(url: str, secret: str) -> None:
    assert secret not in redact_url(url)
    assert secret not in redact_text(f"cannot reach {url}: refused")
    env = {"MONGO_URL": url} if url.startswith("mongodb") else {"CATALOG_URL": url}
    settings = Settings.from_env(env)
    assert secret not in repr(settings)
    assert secret in settings.secrets, "a driver message quoting only the value is scrubbed too"


def test_exception_text_in_logged_tracebacks_is_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter((CATALOG_TOKEN,)))
    log = logging.getLogger(f"test.redact.{uuid.uuid4().hex}")
    log.addHandler(handler)
    log.propagate = False
    try:
        raise RuntimeError(f"mongodb://app:{MONGO_PASSWORD}@db/ said no to {CATALOG_TOKEN}")
    except RuntimeError:
        log.exception("batch failed")
    text = stream.getvalue()
    assert "Traceback" in text and "RuntimeError" in text and "mongodb://app:***@db/" in text
    assert_no_secret("a logged traceback", text)


@pytest.fixture
def restored_process_state() -> Iterator[None]:
    """main() installs a SIGTERM handler and replaces the root log handlers: put them back."""
    handlers, level = logging.getLogger().handlers[:], logging.getLogger().level
    sigterm = signal.getsignal(signal.SIGTERM)
    yield
    logging.getLogger().handlers[:] = handlers
    logging.getLogger().setLevel(level)
    signal.signal(signal.SIGTERM, sigterm)


def test_backfill_debug_traceback_is_redacted(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restored_process_state: None,
) -> None:
    monkeypatch.setenv("BACKFILL_DEBUG", "1")
    monkeypatch.setenv("CATALOG_TOKEN", CATALOG_TOKEN)
    monkeypatch.setenv("MONGO_URL", f"mongodb://{USER_AS_SECRET}@127.0.0.1:{free_port()}/")

    @click.command("explode")
    def explode() -> None:
        # An error nobody anticipated, quoting credentials as driver messages do.
        raise RuntimeError(
            f"mongodb://{USER_AS_SECRET}@h/ and https://c/?token={QUERY_TOKEN} "
            f"with Bearer {CATALOG_TOKEN}"
        )

    cli.add_command(explode)
    try:
        with pytest.raises(SystemExit) as exit_:
            cli_main(["explode"])
    finally:
        cli.commands.pop("explode")
    err = capsys.readouterr().err
    assert exit_.value.code != 0
    assert "Traceback" in err and "RuntimeError" in err, "BACKFILL_DEBUG shows the traceback"
    for secret in (USER_AS_SECRET, QUERY_TOKEN, CATALOG_TOKEN):
        assert secret not in err, f"{secret!r} leaked in a BACKFILL_DEBUG traceback"


def test_flower_refuses_credentials_it_would_split_on_a_comma(tmp_path: Path) -> None:
    # Flower reads "admin:Tr0ub,4dor" as two users, the second "4dor" with no password.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "FLOWER_"))}
    secret = "admin:Tr0ub,4dor"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "flower", "--address", "0.0.0.0"],
        env={**env, "BACKFILL_DATA_DIR": str(tmp_path), "FLOWER_BASIC_AUTH": secret},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "FLOWER_BASIC_AUTH" in lines[0] and "comma" in lines[0]
    assert "Tr0ub" not in proc.stderr + proc.stdout
    assert not list(tmp_path.iterdir()), "nothing may be started before refusing"
