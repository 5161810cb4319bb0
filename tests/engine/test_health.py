"""The health throttle's pure core: the latency window, its verdicts, replication lag, views."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from backfill_engine.health import (
    MIN_SAMPLES,
    RECOVERY_SAMPLES,
    REPLICATION_LAG,
    STALE_SECONDS,
    WINDOW_SIZE,
    WRITE_LATENCY,
    LatencyWindow,
    majority_lag_seconds,
    recovered,
    throttle_view,
    write_verdict,
)
from backfill_engine.settings import (
    DEFAULT_MAX_REPLICATION_LAG_SECONDS,
    DEFAULT_MAX_WRITE_LATENCY_MS,
    Settings,
    SettingsError,
)
from orchestrator.progress import throttle_line

T0 = dt.datetime(2024, 4, 6, 12, 0, 0, tzinfo=dt.UTC)


def window_of(*seconds: float) -> LatencyWindow:
    w = LatencyWindow()
    for s in seconds:
        w.add(s)
    return w


def test_p95_is_the_nearest_rank_over_the_last_writes_only() -> None:
    assert LatencyWindow().p95() is None
    # 100 writes: 1..100 ms; the window keeps the last 50 (51..100 ms), p95 = 48th = 98 ms.
    w = window_of(*(ms / 1000 for ms in range(1, 101)))
    assert len(w) == WINDOW_SIZE
    assert w.p95() == pytest.approx(0.098)
    # Two slow writes in 50 are within the 5 %; three are not.
    assert window_of(*[0.01] * 48, 0.9, 0.9).p95() == pytest.approx(0.01)
    assert window_of(*[0.01] * 47, 0.9, 0.9, 0.9).p95() == pytest.approx(0.9)


def test_verdict_holds_only_past_the_threshold_with_enough_writes() -> None:
    assert write_verdict(window_of(*[0.9] * (MIN_SAMPLES - 1)), 0.5) is None
    assert write_verdict(window_of(*[0.5] * 20), 0.5) is None  # at the threshold: fine
    assert write_verdict(window_of(*[0.9] * 20), 0.0) is None  # 0 turns the check off
    slow = write_verdict(window_of(*[0.812] * 20), 0.5)
    assert slow is not None and slow.kind == WRITE_LATENCY
    assert slow.reason == "write p95 812 ms > 500 ms"


def test_recovery_needs_the_newest_few_fast_and_forgets_the_slow_past() -> None:
    w = window_of(*[0.9] * 40, *[0.01] * (RECOVERY_SAMPLES - 1))
    assert not recovered(w, 0.5)
    w.add(0.01)
    assert recovered(w, 0.5)
    assert write_verdict(w, 0.5) is not None  # the p95 alone would still hold
    w.keep_only(RECOVERY_SAMPLES)
    assert write_verdict(w, 0.5) is None and len(w) == RECOVERY_SAMPLES


def member(state: int, seconds_behind: float) -> dict[str, Any]:
    return {
        "state": state,
        "optimeDate": T0.replace(tzinfo=None) - dt.timedelta(seconds=seconds_behind),
    }


@pytest.mark.parametrize(
    ("members", "majority", "lag"),
    [
        ([member(1, 0)], 1, 0.0),  # one member: nobody to lag
        ([member(1, 0), member(2, 3), member(2, 40)], 2, 3.0),  # majority = primary + best
        ([member(2, 40), member(2, 30), member(1, 0)], 2, 30.0),
        ([member(1, 0), member(2, 3), member(2, 40)], 3, 40.0),  # w: 3 needs every one
        ([member(1, 0), member(8, 0), member(2, 12)], 2, 12.0),  # a down member is no help
        ([member(2, 5), member(2, 9)], 2, 0.0),  # no primary: nothing to measure against
    ],
)
def test_majority_lag_is_the_primary_minus_the_majoritys_newest_optime(
    members: list[dict[str, Any]], majority: int, lag: float
) -> None:
    assert majority_lag_seconds({"members": members, "writeMajorityCount": majority}) == lag


def test_throttle_view_is_active_only_while_a_live_holder_refreshes_it() -> None:
    rec = {"kind": REPLICATION_LAG, "reason": "replication lag 12.0 s > 10 s", "since": T0}
    job: dict[str, Any] = {"status": "running", "throttle": {**rec, "until": None, "seen_at": T0}}
    assert throttle_view({"status": "running"}, T0) is None
    view = throttle_view(job, T0 + dt.timedelta(seconds=2))
    assert view is not None and view.active and view.kind == REPLICATION_LAG
    assert throttle_line(job, T0) == "held back: replication lag 12.0 s > 10 s (since 12:00:00 UTC)"
    later = T0 + dt.timedelta(seconds=STALE_SECONDS + 1)
    assert not throttle_view(job, later).active  # type: ignore[union-attr]
    assert not throttle_view({**job, "status": "paused"}, T0).active  # type: ignore[union-attr]
    ended = {**job, "throttle": {**job["throttle"], "until": T0 + dt.timedelta(seconds=9)}}
    assert not throttle_view(ended, T0).active  # type: ignore[union-attr]
    assert throttle_line(ended, T0) == (
        "last held back: replication lag 12.0 s > 10 s (12:00:00 to 12:00:09 UTC)"
    )


def test_settings_defaults_validation_and_child_environment() -> None:
    s = Settings.from_env({})
    assert s.max_write_latency_ms == DEFAULT_MAX_WRITE_LATENCY_MS
    assert s.max_replication_lag_seconds == DEFAULT_MAX_REPLICATION_LAG_SECONDS
    env = {"BACKFILL_MAX_WRITE_LATENCY_MS": "120", "BACKFILL_MAX_REPLICATION_LAG_SECONDS": "0"}
    again = Settings.from_env(Settings.from_env(env).to_env())
    assert (again.max_write_latency_ms, again.max_replication_lag_seconds) == (120.0, 0.0)
    with pytest.raises(SettingsError, match="BACKFILL_MAX_WRITE_LATENCY_MS must be a number"):
        Settings.from_env({"BACKFILL_MAX_WRITE_LATENCY_MS": "fast"})
    with pytest.raises(SettingsError, match="BACKFILL_MAX_REPLICATION_LAG_SECONDS must be between"):
        Settings.from_env({"BACKFILL_MAX_REPLICATION_LAG_SECONDS": "-1"})
