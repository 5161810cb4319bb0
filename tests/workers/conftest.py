"""Fixtures for worker tests: the catalog stand-in (a real process) and rate limiters in Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from backfill_engine.ratelimit import RateLimiter
from backfill_engine.settings import Settings
from tests.catalog.standin import (  # noqa: F401  (fixtures are found by name)
    catalog,
    catalog_server,
    secured_catalog,
    secured_catalog_server,
)

LimiterFactory = Callable[..., RateLimiter]


@pytest.fixture
def make_limiter(redis_client: redis.Redis, settings: Settings) -> Iterator[LimiterFactory]:
    """Build limiters named after this test's unique queue; their keys are deleted afterwards."""
    made: list[RateLimiter] = []

    def factory(rate: float, burst: float | None = None, name: str = "catalog") -> RateLimiter:
        limiter = RateLimiter(redis_client, f"{settings.queue}:{name}", rate, burst)
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        limiter.clear()
