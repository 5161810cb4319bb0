"""This worker process's runtime, created lazily after fork."""

from __future__ import annotations

import os

from backfill_engine.runtime import Runtime, build_runtime
from backfill_engine.settings import Settings

_runtime: Runtime | None = None
_runtime_pid: int | None = None


def get_runtime() -> Runtime:
    """This process's runtime; rebuilt in a forked child, where sockets cannot be shared."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = build_runtime(Settings.from_env())
        _runtime_pid = os.getpid()
    return _runtime
