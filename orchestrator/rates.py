"""`--rate` values: a fixed rate (`50`, `50/s`, `3000/m`) or `auto[:CEILING]`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backfill_engine.errors import BackfillError

if TYPE_CHECKING:
    from backfill_engine.definition import Backfill

AUTO = "auto"


@dataclass(frozen=True)
class RateSpec:
    """What `--rate` asked for: a fixed rate, or the controller with an optional ceiling."""

    fixed: float | None = None  # requests per second
    auto: bool = False
    ceiling: float | None = None  # requests per second; only with auto

    def start(self, default: float) -> float:
        """The rate a job starts at: the fixed one, or `default` capped by the ceiling."""
        if self.fixed is not None:
            return self.fixed
        return default if self.ceiling is None else min(default, self.ceiling)

    def auto_doc(self, bucket: str, current: float, reason: str, at: Any) -> dict[str, Any]:
        """The job's `rate_auto` field: what the controller (rate_control.py) follows and fills."""
        return {
            "bucket": bucket,
            "ceiling": self.ceiling,
            "current": current,
            "reason": reason,
            "changed_at": at,
        }


def parse_per_second(value: str) -> float:
    """Parse `50`, `50/s`, `3000/m` or `10/h` into requests per second.

    Messages name no option: `run` prints them after click's "--rate", `set_job` adds it.
    """
    text = value.strip().lower()
    per = 1.0
    for suffix, seconds in (("/s", 1.0), ("/m", 60.0), ("/h", 3600.0)):
        if text.endswith(suffix):
            text, per = text[: -len(suffix)], seconds
            break
    try:
        rate = float(text) / per
    except ValueError:
        raise BackfillError(f"{value!r} is not a rate like 50/s, auto or auto:200/s") from None
    if not rate > 0 or math.isinf(rate):
        raise BackfillError(f"rate must be above 0, got {value!r}")
    return rate


def parse_rate(value: str) -> RateSpec:
    """`--rate`: `50/s` (fixed), `auto`, or `auto:200/s` (auto, never above 200/s)."""
    text = value.strip().lower()
    if text == AUTO:
        return RateSpec(auto=True)
    if text.startswith(AUTO + ":"):
        return RateSpec(auto=True, ceiling=parse_per_second(text[len(AUTO) + 1 :]))
    return RateSpec(fixed=parse_per_second(value))


def auto_bucket(definition: Backfill) -> str:
    """The rate bucket `--rate auto` controls; refused for a backfill that calls no API."""
    if definition.rate_bucket is None:
        raise BackfillError(
            f"--rate auto needs an API to watch; backfill {definition.name!r} calls none"
        )
    return definition.rate_bucket
