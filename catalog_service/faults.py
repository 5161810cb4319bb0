"""The stand-in's knobs (latency, 5xx, 429, stalls, trickles, broken, refused answers) and rate."""

from __future__ import annotations

import dataclasses
import math
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from catalog_service.data import DEFAULT_HUGE_CHARS
from catalog_service.limiters import DEFAULT_SCHEME, SCHEMES

MAX_LATENCY_MS = 60_000.0
MAX_STALL_MS = 120_000.0
DEFAULT_STALL_MS = 5_000.0  # a "timeout" stalls this long: above any test's read timeout
DEFAULT_TRICKLE_SECONDS = 5.0  # a trickled body takes this long: above any test's deadline
MAX_TRICKLE_SECONDS = 600.0
MAX_COUNTDOWN = 1_000_000  # fail_next / throttle_next
DEFAULT_RETRY_AFTER_SECONDS = 1  # what `throttle_next` puts in Retry-After
MAX_RETRY_AFTER_SECONDS = 3600
DEFAULT_REFUSE_STATUS = 403  # what a request asking for a `refuse_rate` id is answered


class FaultConfigError(ValueError):
    """A knob value out of range; the message names the knob."""


@dataclass(frozen=True)
class Faults:
    """Every knob of the stand-in; rates are probabilities in [0, 1]."""

    latency_ms: float = 0.0  # sleep before answering each API request
    error_rate: float = 0.0  # answer 500/502/503
    malformed_rate: float = 0.0  # answer 200 with a broken JSON body
    timeout_rate: float = 0.0  # stall `stall_ms` before answering
    stall_ms: float = DEFAULT_STALL_MS
    trickle_rate: float = 0.0  # send the answer's body a few bytes at a time...
    trickle_seconds: float = DEFAULT_TRICKLE_SECONDS  # ...spread over this many seconds
    trickle_head_rate: float = 0.0  # send the status line and headers trickled the same way
    missing_rate: float = 0.0  # deterministic per id: the catalog does not know it
    hostile_rate: float = 0.0  # deterministic per id: a payload that must never be written
    huge_chars: int = DEFAULT_HUGE_CHARS  # length of the "huge_string" hostile value
    # Deterministic per id: a request asking for such an id is answered `refuse_status`
    # (a WAF or an ACL refusing some content) or a 200 with an unparsable body, as a whole.
    refuse_rate: float = 0.0
    refuse_status: int = DEFAULT_REFUSE_STATUS
    poison_rate: float = 0.0
    rate_limit: float = 0.0  # requests per second before 429; 0 = unlimited
    rate_limit_scheme: str = DEFAULT_SCHEME  # how "per second" is counted (limiters.py)
    seed: int = 0
    fail_next: int = 0  # the next N API requests answer 503 (deterministic retries)
    throttle_next: int = 0  # the next N API requests answer 429 with `retry_after`
    retry_after: int = DEFAULT_RETRY_AFTER_SECONDS

    def __post_init__(self) -> None:
        for name in (
            "error_rate",
            "malformed_rate",
            "timeout_rate",
            "trickle_rate",
            "trickle_head_rate",
            "missing_rate",
            "hostile_rate",
            "refuse_rate",
            "poison_rate",
        ):
            _check(name, getattr(self, name), 0.0, 1.0)
        _check("latency_ms", self.latency_ms, 0.0, MAX_LATENCY_MS)
        _check("stall_ms", self.stall_ms, 0.0, MAX_STALL_MS)
        _check("trickle_seconds", self.trickle_seconds, 0.0, MAX_TRICKLE_SECONDS)
        _check("huge_chars", self.huge_chars, 0, 64 * 1024 * 1024)
        _check("rate_limit", self.rate_limit, 0.0, 1_000_000.0)
        _check("fail_next", self.fail_next, 0, MAX_COUNTDOWN)
        _check("throttle_next", self.throttle_next, 0, MAX_COUNTDOWN)
        _check("retry_after", self.retry_after, 0, MAX_RETRY_AFTER_SECONDS)
        _check("refuse_status", self.refuse_status, 400, 499)
        if self.rate_limit_scheme not in SCHEMES:
            raise FaultConfigError(
                f"rate_limit_scheme must be one of {', '.join(SCHEMES)}, "
                f"got {self.rate_limit_scheme!r}"
            )

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with `changes` applied; FaultConfigError names an unknown or bad knob."""
        known = {f.name: f.type for f in dataclasses.fields(self)}
        typed: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise FaultConfigError(f"unknown knob {name!r}; known: {', '.join(known)}")
            if known[name] in ("str", str):
                if not isinstance(value, str):
                    raise FaultConfigError(f"{name} must be a string, got {value!r}")
                typed[name] = value
                continue
            want_int = known[name] in ("int", int)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultConfigError(f"{name} must be a number, got {value!r}")
            if want_int and value != int(value):
                raise FaultConfigError(f"{name} must be an integer, got {value!r}")
            typed[name] = int(value) if want_int else float(value)
        return dataclasses.replace(self, **typed)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(name: str, value: float, lo: float, hi: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and lo <= value <= hi):
        raise FaultConfigError(f"{name} must be between {lo} and {hi}, got {value!r}")


class Dice:
    """Seeded, thread-safe random draws for the per-request faults."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def hit(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def choice(self, options: tuple[int, ...]) -> int:
        with self._lock:
            return self._rng.choice(options)
