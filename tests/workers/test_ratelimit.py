"""The global token bucket in the real Redis: counted grants, pauses, sharing across processes.

Bounds are on tokens granted (never more than rate x window + burst), not on speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from backfill_engine.ratelimit import (
    KEY_PREFIX,
    RateLimiter,
    RateLimitTimeoutError,
    control_key,
    limiter_name,
)
from backfill_engine.settings import Settings

LimiterFactory = Callable[..., RateLimiter]
WINDOW_SECONDS = 1.5


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def test_a_full_bucket_grants_its_burst_then_asks_to_wait(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(rate=5)
    assert [limiter.try_acquire() for _ in range(5)] == [0.0] * 5
    wait = limiter.try_acquire()
    assert 0 < wait <= 0.2 + 0.01  # one token refills in 1/rate seconds


def test_burst_defaults_to_the_rate_and_at_least_one(make_limiter: LimiterFactory) -> None:
    assert make_limiter(rate=20).burst == 20
    assert make_limiter(rate=0.5).burst == 1


def test_a_refused_try_takes_nothing(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(rate=1)
    assert limiter.try_acquire() == 0
    first = limiter.try_acquire()
    second = limiter.try_acquire()
    assert 0 < second <= first  # refusals did not put the bucket further into debt


def test_buckets_with_different_names_are_independent(make_limiter: LimiterFactory) -> None:
    a, b = make_limiter(rate=1, name="a"), make_limiter(rate=1, name="b")
    assert a.try_acquire() == 0
    assert a.try_acquire() > 0
    assert b.try_acquire() == 0


def test_threads_together_never_exceed_rate_times_window_plus_burst(
    make_limiter: LimiterFactory,
) -> None:
    rate = 20.0
    limiter = make_limiter(rate=rate)
    granted = [0] * 8
    stop = time.monotonic() + WINDOW_SECONDS

    def worker(slot: int) -> None:
        while time.monotonic() < stop:
            limiter.acquire(max_wait=5)
            if time.monotonic() < stop:
                granted[slot] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    total = sum(granted)
    assert total <= rate * elapsed + limiter.burst + 1
    assert total >= limiter.burst  # the burst at least was handed out
    assert sum(1 for g in granted if g) >= 2  # every thread shares one bucket, not one each


_CHILD = """
import json, sys, time
import redis
from backfill_engine.ratelimit import RateLimiter
url, name = sys.argv[1], sys.argv[2]
rate, start_at, stop_at = (float(a) for a in sys.argv[3:6])
limiter = RateLimiter(redis.Redis.from_url(url), name, rate)
while time.time() < start_at:
    time.sleep(0.005)
grants = []
while time.time() < stop_at:
    limiter.acquire(max_wait=5)
    grants.append(time.time())
print(json.dumps(grants))
"""


@pytest.mark.timing
def test_two_processes_share_one_bucket(
    make_limiter: LimiterFactory, settings: Settings, tmp_path: Path
) -> None:
    rate = 10.0
    limiter = make_limiter(rate=rate)  # registers the key for cleanup
    assert settings.redis_url
    start_at = time.time() + 5.0  # both children start asking at the same moment
    stop_at = start_at + WINDOW_SECONDS
    argv = [sys.executable, "-c", _CHILD, settings.redis_url, limiter.name, str(rate)]
    argv += [str(start_at), str(stop_at)]
    children = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
        for _ in range(2)
    ]
    grants = [json.loads(child.communicate(timeout=30)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    everything = sorted(g for per_child in grants for g in per_child)
    span = everything[-1] - everything[0]
    assert len(everything) <= rate * span + limiter.burst + 1
    assert all(per_child for per_child in grants)  # both got tokens from the same bucket


def test_pause_blocks_every_acquirer_until_it_elapses(
    make_limiter: LimiterFactory, redis_client: redis.Redis
) -> None:
    limiter = make_limiter(rate=100)
    before = redis_now(redis_client)
    limiter.pause(0.6)
    granted_at: list[float] = []

    def worker() -> None:
        make_limiter(rate=100).acquire(max_wait=10)  # another worker on the same bucket
        granted_at.append(redis_now(redis_client))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted_at) == 4
    assert min(granted_at) >= before + 0.6


def test_a_pause_is_never_shortened(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(rate=10)
    limiter.pause(30)
    left = limiter.pause(1)
    assert left > 25
    assert limiter.paused_for() > 25
    assert limiter.try_acquire() > 25


def test_a_longer_pause_extends_a_shorter_one(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(rate=10)
    limiter.pause(1)
    assert limiter.pause(20) > 15


def test_after_a_pause_the_bucket_refills_from_empty(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(rate=10)
    limiter.pause(0.2)
    limiter.acquire(max_wait=5)
    # No burst of pent-up tokens when a pause lifts: the next token needs a refill.
    assert limiter.try_acquire() > 0


def test_acquire_gives_up_past_max_wait(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(rate=10)
    limiter.pause(30)
    with pytest.raises(RateLimitTimeoutError) as exc:
        limiter.acquire(max_wait=1)
    assert exc.value.name == limiter.name
    assert limiter.name in str(exc.value)


def test_keys_expire(make_limiter: LimiterFactory, redis_client: redis.Redis) -> None:
    limiter = make_limiter(rate=10)
    limiter.try_acquire()
    assert 0 < redis_client.pttl(limiter.key) <= 70_000
    limiter.pause(120)
    assert 120_000 < redis_client.pttl(limiter.key) <= 190_000


def test_key_names_carry_the_queue_and_the_bucket(
    settings: Settings, redis_client: redis.Redis
) -> None:
    limiter = RateLimiter.from_settings(redis_client, settings, "ratings-api")
    assert limiter.key == f"{KEY_PREFIX}:{settings.queue}:ratings-api"
    assert limiter.name == limiter_name(settings.queue, "ratings-api")
    assert limiter.rate == settings.rate_per_second


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (-1, None), (5, 0.5)])
def test_bad_rate_or_burst_is_refused(
    redis_client: redis.Redis, rate: float, burst: float | None
) -> None:
    with pytest.raises(ValueError):
        RateLimiter(redis_client, "never-used", rate, burst)


def test_more_tokens_than_the_burst_is_refused(make_limiter: LimiterFactory) -> None:
    with pytest.raises(ValueError):
        make_limiter(rate=2).try_acquire(3)


def test_a_fixed_rate_bucket_ignores_an_auto_controllers_rate(
    make_limiter: LimiterFactory, redis_client: redis.Redis
) -> None:
    # The suspected interaction behind two rate tests that failed once: a `--rate auto`
    # controller's live rate (KEYS[2]) must bend only limiters that follow it.
    fixed = make_limiter(rate=2, burst=1)
    redis_client.hset(control_key(fixed.name), "rate", 1000)
    try:
        assert fixed.try_acquire() == 0
        wait = fixed.try_acquire()
        assert 0.4 < wait <= 0.5 + 0.01  # 1/2 s at the fixed rate, not 1/1000 s
        follower = RateLimiter(redis_client, fixed.name, 2, 1, follow_controller=True)
        time.sleep(0.01)
        assert follower.try_acquire() == 0  # it follows the controller's 1000/s
    finally:
        redis_client.delete(control_key(fixed.name))
