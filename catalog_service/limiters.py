"""The stand-in's rate limiters: the three schemes APIs put in front of themselves.

Each admits about `rate` requests per second and answers any other with the seconds
until it would admit one (the stand-in then says 429 + `Retry-After`). They differ in
what a client sees at the edges, which is what `--rate auto` has to cope with:

- **token-bucket** (the default, as before): a full bucket of `max(1, rate)` tokens,
  refilled continuously. A client may burst `rate` requests, then gets one every 1/rate s.
- **fixed-window**: at most `rate` requests per calendar second (windows start at whole
  seconds of the server's clock). Up to 2 x rate may pass inside one second that
  straddles a boundary, and a client that spends the window early waits for the next.
- **sliding-window**: at most `rate` requests in any one-second interval (a log of the
  admitted requests' times). The strictest: no burst above `rate`, ever.

All are thread-safe; a rate of 0 admits everything.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

TOKEN_BUCKET = "token-bucket"
FIXED_WINDOW = "fixed-window"
SLIDING_WINDOW = "sliding-window"
SCHEMES = (TOKEN_BUCKET, FIXED_WINDOW, SLIDING_WINDOW)
DEFAULT_SCHEME = TOKEN_BUCKET  # what the stand-in always did
WINDOW_SECONDS = 1.0


class Limiter(Protocol):
    rate: float

    def take(self) -> float:
        """0.0 when the request is admitted, else the seconds until one would be."""


class TokenBucket:
    """A bucket of `burst` tokens (default max(1, rate)) refilled at `rate` per second."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


class FixedWindow:
    """At most `rate` (rounded down, at least 1) requests per whole second of the clock."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.limit = max(1, int(rate))
        self._clock = clock
        self._window = -1
        self._count = 0
        self._lock = threading.Lock()

    def take(self) -> float:
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            window = math.floor(now / WINDOW_SECONDS)
            if window != self._window:
                self._window, self._count = window, 0
            if self._count < self.limit:
                self._count += 1
                return 0.0
            return (window + 1) * WINDOW_SECONDS - now


class SlidingWindow:
    """At most `rate` (rounded down, at least 1) requests in any one-second interval."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.limit = max(1, int(rate))
        self._clock = clock
        self._admitted: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def take(self) -> float:
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            while self._admitted and self._admitted[0] <= now - WINDOW_SECONDS:
                self._admitted.popleft()
            if len(self._admitted) < self.limit:
                self._admitted.append(now)
                return 0.0
            return self._admitted[0] + WINDOW_SECONDS - now


def make_limiter(scheme: str, rate: float) -> Limiter:
    """The limiter for `scheme` (one of SCHEMES) at `rate` requests/s."""
    if scheme == TOKEN_BUCKET:
        return TokenBucket(rate)
    if scheme == FIXED_WINDOW:
        return FixedWindow(rate)
    if scheme == SLIDING_WINDOW:
        return SlidingWindow(rate)
    raise ValueError(f"unknown rate limit scheme {scheme!r}; known: {', '.join(SCHEMES)}")
