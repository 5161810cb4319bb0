"""Shift one worker process's wall clock by a fixed offset, as on a host whose clock is off.

Debian's libfaketime (LD_PRELOAD) does not work here: under it Python 3.11's
`time.sleep` fails with EINVAL (FAKETIME_DONT_FAKE_MONOTONIC=1) or thread waits hang
(without it). So the skew is applied in Python, before anything else is imported:
`skewed_clock_env(seconds)` puts tests/faults/skewed_site on PYTHONPATH, whose
`sitecustomize` calls `install()` at interpreter start when SKEWED_CLOCK_SECONDS is set.
`install()` offsets `time.time`/`time.time_ns` and installs a `datetime.datetime`
subclass whose `now`/`utcnow` are offset. The monotonic clock is untouched, and forked
pool processes inherit the patch. Only that process tree is skewed: the database,
Redis and every other process keep the real time.
"""

from __future__ import annotations

import datetime as _dt
import os
import time as _time
from pathlib import Path
from typing import Any

ENV = "SKEWED_CLOCK_SECONDS"
SITE_DIR = Path(__file__).resolve().parent / "skewed_site"


def install(offset_seconds: float) -> None:
    """Offset this process's wall clock (`time.time`, `datetime.now`) by `offset_seconds`."""
    real_time, real_time_ns = _time.time, _time.time_ns
    real: Any = _dt.datetime
    delta = _dt.timedelta(seconds=offset_seconds)
    offset_ns = int(offset_seconds * 1e9)

    def time() -> float:
        return real_time() + offset_seconds

    def time_ns() -> int:
        return real_time_ns() + offset_ns

    class _Meta(type):
        # Values made before the patch, or decoded by C code, are plain datetimes:
        # they must still pass `isinstance(x, datetime.datetime)`.
        def __instancecheck__(cls, obj: object) -> bool:
            return isinstance(obj, real)

        def __subclasscheck__(cls, sub: type) -> bool:
            return issubclass(sub, real)

    class SkewedDatetime(real, metaclass=_Meta):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return real.now(tz) + delta

        @classmethod
        def utcnow(cls) -> Any:
            return real.now(_dt.UTC).replace(tzinfo=None) + delta

        @classmethod
        def today(cls) -> Any:
            return real.now() + delta

    setattr(_time, "time", time)  # noqa: B010 - patching the module is the point
    setattr(_time, "time_ns", time_ns)  # noqa: B010
    setattr(_dt, "datetime", SkewedDatetime)  # noqa: B010


def install_from_env() -> None:
    raw = os.environ.get(ENV)
    if raw:
        install(float(raw))


def skewed_clock_env(offset_seconds: float) -> dict[str, str]:
    """Environment for a child process whose wall clock is `offset_seconds` off."""
    path = os.environ.get("PYTHONPATH")
    return {
        ENV: str(offset_seconds),
        "PYTHONPATH": os.pathsep.join([str(SITE_DIR), *([path] if path else [])]),
    }
