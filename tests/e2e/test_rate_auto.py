"""`--rate auto`: the elected controller finds the API's rate from above and from below.

Real workers against the stand-in started with `--rate-limit R`; the job is not told R.
Everything asserted is a count, a state or a rate the stand-in measured (/_stats).
"""

from __future__ import annotations

import pytest
import redis

from backfill_engine.rate_control import actors_key, read_control
from backfill_engine.ratelimit import limiter_name
from tests.harness import System, seed_products

# Timing-sensitive under load: `make test` runs these after the parallel phase, away from its load.
pytestmark = [pytest.mark.e2e, pytest.mark.timing]

LIMIT = 10.0  # the stand-in's requests/s; the job never hears of it
# Low enough that the workers can exceed it even on a slow host next to a busy database:
# at 20/s they once could not, the API never pushed back and nothing was there to find.
SUBCHUNK = {"BACKFILL_SUBCHUNK_SIZE": "10"}  # 10 ids per request: many requests per product


def _control(system: System) -> dict[str, str]:
    assert system.settings.redis_url
    rds = redis.Redis.from_url(system.settings.redis_url)
    return read_control(rds, limiter_name(system.settings.queue, "catalog"))


def _actors(system: System) -> dict[bytes, bytes]:
    assert system.settings.redis_url
    rds = redis.Redis.from_url(system.settings.redis_url)
    return rds.hgetall(actors_key(limiter_name(system.settings.queue, "catalog")))  # type: ignore[return-value]


# ~45 s each of convergence measured against the stand-in: `make reliability` runs them
# (and `make bench` measures the controller); `make test` keeps the ceiling test below, the
# controller's pure tests (tests/engine/test_rate_policy.py) and the two-process bucket.
@pytest.mark.slow
@pytest.mark.parametrize("start", [10 * LIMIT, LIMIT / 10], ids=["from-above", "from-below"])
def test_auto_rate_converges_to_the_apis_limit(system: System, start: float) -> None:
    system.start_catalog("--rate-limit", str(LIMIT))
    # Enough work that plenty of it is left after the first correction, however fast the
    # workers reach it (4 000 products: 400 requests, ~40 s at the limit).
    seed_products(system.db, 4000)
    # Three worker processes, each running a controller thread: one of them acts.
    system.start_workers(3, concurrency=2, extra_env=SUBCHUNK)
    job_id = system.launch(batch_size=100, max_in_flight=6, rate_per_second=start, rate_auto=True)
    # Past the first correction (a cut from above, the fast start's end from below) ...
    system.wait_until(
        lambda: (
            (system.db.backfill_metadata.find_one({"_id": job_id}) or {})
            .get("rate_auto", {})
            .get("reason", "start")
            .startswith(("429", "answering well"))
        ),
        timeout=90,
        what="the controller's first correction",
    )
    system.reset_stats()
    # ... the rest of the job runs near the limit, rarely throttled.
    summary = system.wait(job_id, timeout=240)
    assert summary.job["status"] == "completed"
    stats = system.stats()
    ok, throttled = stats["by_status"].get("200", 0), stats["by_status"].get("429", 0)
    assert ok >= 100, stats  # enough traffic for a share to mean something
    assert throttled <= 0.05 * (ok + throttled), stats
    final = float(_control(system)["rate"])
    assert 0.5 * LIMIT <= final <= 1.6 * LIMIT, final  # a fixed start (200 or 2) stays far out
    auto = summary.job["rate_auto"]
    assert 0.5 * LIMIT <= auto["current"] <= 1.6 * LIMIT, auto
    actors = _actors(system)
    assert len(actors) == 1, actors  # exactly one controller acted, with 3 processes running one
    assert int(next(iter(actors.values()))) >= 5


def test_auto_with_a_ceiling_never_exceeds_it(system: System) -> None:
    ceiling = 1.2 * LIMIT  # below what the workers send when nothing holds them back
    # An unlimited stand-in: only the ceiling holds the rate. 150 requests: the fast start
    # (x1.5 a tick from 5/s) meets the ceiling within a few seconds, and 100 or more
    # requests are then sent against it.
    seed_products(system.db, 1500)
    system.start_workers(2, concurrency=2, extra_env=SUBCHUNK)
    job_id = system.launch(
        batch_size=100, max_in_flight=4, rate_per_second=5.0, rate_auto=True, rate_ceiling=ceiling
    )
    summary = system.wait(job_id, timeout=240)
    assert summary.job["status"] == "completed"
    stats = system.stats()
    assert stats["requests"] >= 150, stats
    assert stats["max_rate_1s"] <= ceiling + 1, stats  # burst 1: the edge request at most
    assert summary.job["rate_auto"]["current"] == ceiling, summary.job["rate_auto"]
    assert summary.job["rate_auto"]["reason"].startswith("at ceiling")
