"""Commands find a running `backfill up` through its state file, and only a live one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from backfill_engine.settings import Settings
from orchestrator.stack_state import (
    RunningStack,
    read_state,
    remove_state,
    state_path,
    with_running_stack,
    write_state,
)


def _state(pid: int) -> RunningStack:
    return RunningStack(
        pid=pid,
        mongo_url="mongodb://127.0.0.1:27999/?directConnection=true",
        redis_url="redis://127.0.0.1:6399/0",
        source_urls={"CATALOG_URL": "http://127.0.0.1:8799"},
        queue="up-queue",
    )


def test_unset_settings_come_from_the_running_stack_and_set_ones_win(tmp_path: Path) -> None:
    write_state(tmp_path, _state(os.getpid()))
    assert state_path(tmp_path).stat().st_mode & 0o077 == 0  # URLs may carry passwords
    env = {"BACKFILL_DATA_DIR": str(tmp_path)}
    found = with_running_stack(Settings.from_env(env), env)
    assert found.mongo_url == _state(0).mongo_url and found.redis_url == _state(0).redis_url
    assert found.source_env["CATALOG_URL"] == "http://127.0.0.1:8799" and found.queue == "up-queue"

    env = {**env, "CATALOG_URL": "http://127.0.0.1:9000", "BACKFILL_QUEUE": "mine"}
    mixed = with_running_stack(Settings.from_env(env), env)
    assert mixed.source_env["CATALOG_URL"] == "http://127.0.0.1:9000" and mixed.queue == "mine"
    assert mixed.mongo_url == _state(0).mongo_url


def test_a_stack_whose_process_is_gone_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_state(tmp_path, _state(gone.pid))
    env = {"BACKFILL_DATA_DIR": str(tmp_path)}
    assert read_state(tmp_path) is None
    assert with_running_stack(Settings.from_env(env), env) == Settings.from_env(env)


def test_only_the_writer_removes_the_file(tmp_path: Path) -> None:
    write_state(tmp_path, _state(os.getpid()))
    remove_state(tmp_path, os.getpid() + 1)
    assert read_state(tmp_path) is not None
    remove_state(tmp_path, os.getpid())
    assert not state_path(tmp_path).exists()
