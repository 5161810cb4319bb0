"""A worker's background loops ask the database less and less while there is nothing to do."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pymongo.monitoring
from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_workers.ratecontrol import RateControlThread

TICK_SECONDS = 0.05
WINDOW_SECONDS = 3.0


class _FindsFrom(pymongo.monitoring.CommandListener):
    """Counts `find` commands sent from threads named `thread`."""

    def __init__(self, thread: str) -> None:
        self.thread, self.count = thread, 0

    def started(self, event: pymongo.monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and threading.current_thread().name == self.thread:
            self.count += 1

    def succeeded(self, event: pymongo.monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: pymongo.monitoring.CommandFailedEvent) -> None:
        pass


def test_idle_rate_control_backs_off(db: Database, settings: Settings) -> None:
    # No job at all: every tick finds nothing to steer. At a steady 0.05 s the window would
    # hold about 60 queries; doubling waits (0.05, 0.1, 0.2, ... s) hold about 6.
    finds = _FindsFrom("backfill-ratecontrol")
    pymongo.monitoring.register(finds)  # clients created from now on report to it
    loop = RateControlThread(replace(settings, rate_control_interval_seconds=TICK_SECONDS))
    loop.start()
    time.sleep(WINDOW_SECONDS)
    loop.stop()
    assert 1 <= finds.count <= 12, finds.count
    assert loop.wait > TICK_SECONDS
