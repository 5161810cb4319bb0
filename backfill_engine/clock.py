"""Time as the database server tells it, so every host compares leases with one clock.

Lease, lock and dispatch expiries are written by one host and judged by another. With
each host's own clock, a host running minutes ahead steals live leases and one running
behind keeps dead ones. So `now()` is this host's clock corrected by the offset to the
MongoDB server's clock (`hello.localTime`, measured around one round trip and refreshed
every REFRESH_SECONDS). The offset is kept against this host's monotonic clock, not its
wall clock: a wall-clock step (a VM resumed, an NTP step) must not move this host's idea
of server time until the next refresh, or it could take live leases or write dead ones.
The same clock stamps the expiries that filters later compare with, so expiry is judged
by one clock whichever host writes or reads it; `$$NOW` inside `$expr` is not supported
by every wire-compatible server (docs/benchmarks.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

import pymongo.errors

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30.0  # drift between two hosts' clocks over this long is negligible
RETRY_SECONDS = 5.0  # after a failed measurement, keep the old offset this long
MAX_TRUSTED_RTT_SECONDS = 1.0  # a slower round trip says little about the server's time

_lock = threading.Lock()
_client: Any = None
# Server time = monotonic time + this. Until a first measurement, this host's wall clock.
_mono_offset: float | None = None
_next_refresh = 0.0


def _wall() -> float:
    return time.time()


def _mono() -> float:
    return time.monotonic()


def attach(client: Any) -> None:
    """Judge time by `client`'s server from now on (measured at the next `now()`)."""
    global _client, _next_refresh
    with _lock:
        _client, _next_refresh = client, 0.0


def offset_seconds() -> float:
    """Server clock minus this host's wall clock now (0 before any measurement)."""
    if _mono_offset is None:
        return 0.0
    return _mono() + _mono_offset - _wall()


def measure(client: Any) -> float:
    """One measurement of server time minus this host's monotonic clock, in seconds."""
    t0 = _mono()
    reply = client.admin.command("hello")
    t1 = _mono()
    server = reply.get("localTime")
    if not isinstance(server, dt.datetime):
        raise LookupError("server did not report localTime")
    if server.tzinfo is None:  # pymongo hands naive UTC datetimes back by default
        server = server.replace(tzinfo=dt.UTC)
    if t1 - t0 > MAX_TRUSTED_RTT_SECONDS:
        raise TimeoutError(f"hello took {t1 - t0:.2f}s")
    return server.timestamp() - (t0 + t1) / 2


def _refresh() -> None:
    global _mono_offset, _next_refresh
    if _client is None or _mono() < _next_refresh:
        return
    with _lock:
        if _mono() < _next_refresh:
            return
        try:
            _mono_offset = measure(_client)
            _next_refresh = _mono() + REFRESH_SECONDS
        except (pymongo.errors.PyMongoError, LookupError, TimeoutError) as exc:
            log.debug("server clock not measured (%s); keeping offset", type(exc).__name__)
            _next_refresh = _mono() + RETRY_SECONDS


def now() -> dt.datetime:
    """The server's current time (UTC, millisecond precision, as BSON stores it)."""
    _refresh()
    seconds = _wall() if _mono_offset is None else _mono() + _mono_offset
    t = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)
