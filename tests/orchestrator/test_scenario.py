"""The local scenario: what `demo` and `up` run besides the servers, found by entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backfill_engine.runtime import missing_settings, worker_definitions
from backfill_engine.settings import Settings
from migrations import VERSIONS_DIR
from orchestrator.errors import BackfillError, StackError
from orchestrator.scenario import LocalScenario, StandIn, load_scenario, scenario_commands
from orchestrator.stack import ManagedProcess, spawn


def test_the_installed_catalog_scenario_is_found_without_settings() -> None:
    scenario = load_scenario({})
    assert scenario.name == "catalog" and scenario.backfill == "catalog"
    assert [s.url_env for s in scenario.stand_ins] == ["CATALOG_URL"]
    assert "catalog-server" in {c.name for c in scenario_commands()}


def test_a_backfill_command_imports_no_scenario_migrations() -> None:
    # Every command loads the scenarios' CLI verbs; were that to import our example
    # `migrations` package, a team's own `migrations.*` modules would resolve to ours.
    code = (
        "import sys; from orchestrator.cli import cli; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] == 'migrations' or m == 'catalog_service.scenario'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_unknown_scenario_is_refused_in_one_line_naming_the_installed_ones() -> None:
    with pytest.raises(BackfillError) as err:
        load_scenario({"BACKFILL_LOCAL_SCENARIO": "ratings"})
    assert str(err.value) == (
        "BACKFILL_LOCAL_SCENARIO='ratings' is not installed (installed: catalog)"
    )


def _sleeper(log_dir: Path, _latency_ms: int) -> ManagedProcess:
    proc = spawn(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log_dir / "s.log"
    )
    proc.url = "http://127.0.0.1:1"
    return proc


def _broken(_log_dir: Path, _latency_ms: int) -> ManagedProcess:
    raise StackError("ratings stand-in did not listen")


def _scenario(*stand_ins: StandIn) -> LocalScenario:
    return LocalScenario("t", "t", "docs", "t_synced_at", lambda _db, _n: 0, stand_ins)


def test_stand_ins_start_only_where_no_url_is_set(tmp_path: Path) -> None:
    scenario = _scenario(StandIn("A_URL", "a", _sleeper), StandIn("B_URL", "b", _sleeper))
    urls, started = scenario.start_stand_ins({"B_URL": "https://b.example"}, tmp_path, 0)
    try:
        assert urls == {"A_URL": "http://127.0.0.1:1"} and len(started) == 1
    finally:
        for proc in started:
            proc.stop()


def test_a_stand_in_that_fails_to_start_stops_those_started_before_it(tmp_path: Path) -> None:
    started: list[ManagedProcess] = []

    def first(log_dir: Path, latency_ms: int) -> ManagedProcess:
        started.append(_sleeper(log_dir, latency_ms))
        return started[-1]

    scenario = _scenario(StandIn("A_URL", "a", first), StandIn("B_URL", "b", _broken))
    with pytest.raises(StackError):
        scenario.start_stand_ins({}, tmp_path, 0)
    assert len(started) == 1 and not started[0].alive()


def test_workers_name_the_unset_api_and_the_backfill_that_calls_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CATALOG_URL", raising=False)
    bare = Settings(
        mongo_url="mongodb://127.0.0.1:1", data_dir=".", migrations_dir=str(VERSIONS_DIR)
    )
    definitions = worker_definitions(bare)
    assert ("CATALOG_URL", ["catalog"]) in missing_settings(bare, definitions)
    given = bare.with_source_env(CATALOG_URL="http://127.0.0.1:8700")
    assert "CATALOG_URL" not in dict(missing_settings(given, definitions))
