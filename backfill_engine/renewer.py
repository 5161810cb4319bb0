"""One background loop that keeps a lease alive: a batch's (lease_keeper.py) or the
migration lock's (backfill_migrations.lock).

A daemon thread calls `renew()` every `interval` seconds. `renew` returning False means the
lease is gone (expired, or taken over): `lost` is set and the loop ends, since renewing
something another holder owns now would be wrong. A transient error (the server briefly
unreachable) is reported and the next round tries again: whoever relies on the lease
proves it before its next write anyway. An optional `poll` runs on its own period in the
same thread (a batch re-reads its job's status there).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import pymongo.errors

TRANSIENT = (pymongo.errors.PyMongoError,)


class Renewer:
    """Calls `renew` every `interval` seconds from a daemon thread until stopped or lost."""

    def __init__(
        self,
        renew: Callable[[], bool],
        interval: float,
        *,
        name: str,
        lost: threading.Event | None = None,
        on_lost: Callable[[], None] | None = None,
        on_transient: Callable[[BaseException], None] | None = None,
        poll: Callable[[], None] | None = None,
        poll_seconds: float = math.inf,
    ) -> None:
        self.renew, self.interval = renew, interval
        self.lost = lost if lost is not None else threading.Event()
        self.on_lost, self.on_transient = on_lost, on_transient
        self.poll = poll
        self.poll_seconds = poll_seconds if poll is not None else math.inf
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """End the loop, waiting up to `timeout` seconds for a renewal in progress."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def __enter__(self) -> Renewer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        next_renew = time.monotonic() + self.interval
        next_poll = time.monotonic() + self.poll_seconds
        while not self._stop.wait(max(0.0, min(next_renew, next_poll) - time.monotonic())):
            now = time.monotonic()
            try:
                if self.poll is not None and now >= next_poll:
                    next_poll = now + self.poll_seconds
                    self.poll()
                if now >= next_renew:
                    next_renew = now + self.interval
                    if not self.renew():
                        self.lost.set()
                        if self.on_lost is not None:
                            self.on_lost()
                        return
            except TRANSIENT as exc:
                if self.on_transient is not None:
                    self.on_transient(exc)
