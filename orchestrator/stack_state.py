"""The running local stack, described in a small file so other commands find it.

`backfill up` writes `<BACKFILL_DATA_DIR>/stack.json` once its servers answer and
removes it on exit. Every other command started with the same data directory reads it
when MONGO_URL, REDIS_URL, BACKFILL_QUEUE or a stand-in's URL variable are unset, so
`backfill run NAME` in a second terminal needs no settings typed. A file whose writer is gone
(killed with SIGKILL) is ignored: the pid it names no longer runs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from backfill_engine.settings import Settings
from orchestrator.stack import pid_alive

STATE_FILE = "stack.json"


@dataclass(frozen=True)
class RunningStack:
    """Where the servers of a live `backfill up` listen."""

    pid: int
    mongo_url: str
    redis_url: str
    queue: str
    source_urls: dict[str, str] = field(default_factory=dict)  # stand-ins, by URL variable
    flower_url: str | None = None
    metrics_url: str | None = None


def state_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / STATE_FILE


def write_state(data_dir: str | Path, state: RunningStack) -> Path:
    """Write the state file atomically, readable by its owner only (URLs may hold passwords)."""
    path = state_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(state), f, indent=2)
    os.replace(tmp, path)  # readers see the old file or the whole new one, never half
    return path


def read_state(data_dir: str | Path) -> RunningStack | None:
    """The live stack on `data_dir`, or None (no file, a garbled one, or its writer is gone)."""
    try:
        raw = json.loads(state_path(data_dir).read_text())
        known = {f.name for f in fields(RunningStack)}
        state = RunningStack(**{k: v for k, v in raw.items() if k in known})
    except (OSError, ValueError, TypeError):
        return None
    return state if isinstance(state.pid, int) and pid_alive(state.pid) else None


def remove_state(data_dir: str | Path, pid: int) -> None:
    """Remove the state file if `pid` wrote it (a newer stack's file is left alone)."""
    path = state_path(data_dir)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()


def with_running_stack(settings: Settings, env: Mapping[str, str]) -> Settings:
    """`settings` with what the environment leaves unset filled in from a live `backfill up`."""
    state = read_state(settings.data_dir)
    if state is None:
        return settings
    return replace(
        settings,
        mongo_url=settings.mongo_url or state.mongo_url,
        redis_url=settings.redis_url or state.redis_url,
        # The queue has a default, so only an unset variable defers to the stack's queue.
        queue=settings.queue if env.get("BACKFILL_QUEUE") else state.queue,
    ).with_source_env(
        **{name: settings.source_env.get(name) or url for name, url in state.source_urls.items()}
    )
