"""One global token bucket in Redis, shared by every worker on every host.

Celery's own `rate_limit` is per worker; this bucket is per job queue and resource, so
N workers together never exceed the rate. A 429 `Retry-After` from an API calls
`pause()`, which blocks every `acquire()` on the bucket until it elapses. The atomic
step is the Lua script in ratelimit.lua, timed by the Redis server's clock.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import redis

from backfill_engine.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "backfill:ratelimit"
DEFAULT_MAX_WAIT_SECONDS = 300.0  # acquire() gives up after this long (a stuck pause)
MAX_SINGLE_SLEEP_SECONDS = 5.0  # re-ask Redis at least this often (a pause may be lifted)
WAKE_JITTER = 0.1  # up to +10 % on each sleep so waiting workers do not wake in lockstep

_SCRIPT = (Path(__file__).with_name("ratelimit.lua")).read_text()


class RateLimitError(Exception):
    """Base of the rate limiter's errors."""


class RateLimitTimeoutError(RateLimitError):
    """acquire() would have waited longer than its `max_wait`."""

    def __init__(self, name: str, waited: float, max_wait: float) -> None:
        self.name, self.waited, self.max_wait = name, waited, max_wait
        super().__init__(
            f"rate limiter {name!r}: no token within {max_wait:.1f}s (waited {waited:.1f}s)"
        )


def limiter_name(queue: str, resource: str) -> str:
    """The bucket name for `resource` used by the jobs of `queue`."""
    return f"{queue}:{resource}"


def control_key(name: str) -> str:
    """The Redis hash where bucket `name`'s rate controller keeps its rate and reasoning."""
    return f"{KEY_PREFIX}:{name}:auto"


class RateLimiter:
    """Token bucket `name` in Redis: `rate` tokens/s up to `burst` (default max(1, rate))."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        rate: float,
        burst: float | None = None,
        *,
        max_wait: float = DEFAULT_MAX_WAIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        follow_controller: bool = False,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 tokens/s, got {rate!r}")
        self.name = name
        self.key = f"{KEY_PREFIX}:{name}"
        # `--rate auto`: the rate stored by the bucket's controller wins over `rate`.
        self.control_key = control_key(name)
        self.follow_controller = follow_controller
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1 token, got {burst!r}")
        self.max_wait = max_wait
        self._sleep = sleep
        self._script = client.register_script(_SCRIPT)
        self._client = client

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings, bucket: str) -> RateLimiter:
        """The bucket `bucket` of `settings.queue` at `settings.rate_per_second`."""
        return cls(client, limiter_name(settings.queue, bucket), settings.rate_per_second)

    def _call(self, op: str, arg: float) -> float:
        follow = "1" if self.follow_controller else "0"
        micros = self._script(
            keys=[self.key, self.control_key], args=[op, self.rate, self.burst, arg, follow]
        )
        return int(micros) / 1_000_000

    def try_acquire(self, tokens: float = 1) -> float:
        """Take `tokens` now and return 0.0, or take nothing and return the seconds to wait."""
        if not 0 < tokens <= self.burst:
            raise ValueError(f"tokens must be in (0, {self.burst}], got {tokens!r}")
        return self._call("acquire", tokens)

    def acquire(self, tokens: float = 1, max_wait: float | None = None) -> None:
        """Block until `tokens` are taken; RateLimitTimeoutError past `max_wait` seconds."""
        limit = self.max_wait if max_wait is None else max_wait
        start = time.monotonic()
        while True:
            wait = self.try_acquire(tokens)
            if wait <= 0:
                return
            waited = time.monotonic() - start
            if waited + wait > limit:
                raise RateLimitTimeoutError(self.name, waited, limit)
            self._sleep(min(wait, MAX_SINGLE_SLEEP_SECONDS) * (1 + random.random() * WAKE_JITTER))

    def pause(self, seconds: float) -> float:
        """Block every acquire for `seconds` (never shortening a longer pause); seconds left."""
        if seconds <= 0:
            return self.paused_for()
        left = self._call("pause", seconds)
        log.info("rate limiter %s paused for %.2fs", self.name, left)
        return left

    def paused_for(self) -> float:
        """Seconds until the current pause ends; 0.0 when not paused."""
        return self._call("peek", 0)

    def clear(self) -> None:
        """Forget the bucket (a full bucket, no pause); for tests and operators."""
        self._client.delete(self.key)
