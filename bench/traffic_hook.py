"""Loaded by a bench worker (`celery worker --include bench.traffic_hook`): registers a
TrafficListener for every MongoClient this process and its forked pool children create,
and writes each process's counts to `$BENCH_TRAFFIC_DIR/<pid>.json` (bench.traffic).

Nothing in the engine or the workers imports it: without the variable it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from pymongo import monitoring

from bench.traffic import FLUSH_SECONDS, WORKER_ENV, TrafficListener, write_file

_listener = TrafficListener()


def _flush_forever(directory: Path) -> None:
    path = directory / f"{os.getpid()}.json"
    while True:  # a daemon thread: it ends with the process
        time.sleep(FLUSH_SECONDS)
        t0 = time.thread_time()
        with contextlib.suppress(OSError):
            write_file(path, _listener)
        # The bench's work, not the engine's: taken out of the worker's CPU with the
        # listener's (counted in the next file this thread writes).
        _listener.charge(time.thread_time() - t0)


def _start(directory: Path) -> None:
    threading.Thread(
        target=_flush_forever, args=(directory,), daemon=True, name="bench-traffic"
    ).start()


def _install() -> None:
    where = os.environ.get(WORKER_ENV)
    if not where:
        return
    directory = Path(where)
    directory.mkdir(parents=True, exist_ok=True)
    monitoring.register(_listener)

    def _in_child() -> None:
        # A pool child starts from zero (its parent's counts are the parent's) and needs
        # its own writer thread: threads do not survive a fork.
        _listener.reset()
        _start(directory)

    os.register_at_fork(after_in_child=_in_child)
    _start(directory)


_install()
