"""One global rate across worker processes: the stand-in never sees more than the limit."""

from __future__ import annotations

import pytest

from tests.harness import System, seed_products

# Timing-sensitive under load: `make test` runs these after the parallel phase, away from its load.
pytestmark = [pytest.mark.e2e, pytest.mark.timing]

RATE = 8.0  # requests per second, for all workers together


def test_global_limiter_holds_observed_rate_across_worker_processes(system: System) -> None:
    # Small sub-chunks make many requests; 2 processes x 2 slots could do far more than RATE.
    seed_products(system.db, 400)
    system.start_workers(2, concurrency=2, extra_env={"BACKFILL_SUBCHUNK_SIZE": "10"})
    summary = system.wait(system.launch(batch_size=50, rate_per_second=RATE, max_in_flight=8))
    assert summary.job["status"] == "completed"
    stats = system.stats()
    assert stats["requests"] >= 40  # enough requests that an unlimited run would burst past RATE
    # Burst of one token: a 1-second window holds at most RATE requests plus the one at its edge.
    assert stats["max_rate_1s"] <= RATE + 1, stats["max_rate_1s"]
    # Both processes really ran batches (their logs show finished batches).
    for w in system.workers:
        assert w.log_path and "done:" in w.log_path.read_text(), w.name
