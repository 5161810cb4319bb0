"""`--rate auto`'s decisions as a pure function: no server needed (rate_policy.decide)."""

from __future__ import annotations

from dataclasses import replace

from backfill_engine.rate_policy import (
    CUT_FACTOR,
    HOLD_SECONDS,
    ControlState,
    Window,
    decide,
    with_ceiling,
)


def busy(rate: float, *, throttled: int = 0, latency: float = 0.01) -> Window:
    """One second in which the workers used all of `rate`."""
    ok = int(rate) - throttled
    return Window(seconds=1.0, ok=ok, throttled=throttled, latencies=(latency,) * 30)


def test_429_cuts_to_a_share_of_what_the_api_sustained() -> None:
    state = ControlState(rate=400.0, ok_since_cut=40, seconds_since_cut=1.0)
    d = decide(state, Window(seconds=1.0, ok=40, throttled=12), now=100.0)
    assert d.changed
    assert d.state.rate == CUT_FACTOR * 40  # (40 + 40) ok over 2 s: 40/s sustained
    assert d.state.phase == "steady"
    assert d.state.reason.startswith("429")


def test_echoes_of_one_overshoot_cut_once() -> None:
    cut = decide(ControlState(rate=100.0), busy(100, throttled=5), now=10.0).state
    again = decide(cut, busy(cut.rate, throttled=3), now=10.0 + HOLD_SECONDS / 2)
    assert not again.changed and again.state.rate == cut.rate


def test_start_grows_fast_until_pushback() -> None:
    state = ControlState(rate=4.0)
    for t in range(6):
        state = decide(state, busy(state.rate), now=float(t)).state
    assert state.rate > 40  # ten times the start within six ticks


def test_after_a_cut_growth_is_additive_and_slows_near_the_knee() -> None:
    state = ControlState(rate=36.0, phase="steady", knee=40.0)
    rates = []
    for t in range(10):
        state = decide(state, busy(state.rate), now=float(t)).state
        rates.append(state.rate)
    steps = [b - a for a, b in zip([36.0, *rates], rates, strict=False)]
    assert all(s > 0 for s in steps)
    assert steps[-1] < steps[0] and steps[-1] <= 0.01 * rates[-2] + 0.11  # probing past the knee


def test_an_idle_bucket_does_not_grow() -> None:
    state = ControlState(rate=50.0, phase="steady")
    d = decide(state, Window(seconds=1.0, ok=10, latencies=(0.01,) * 30), now=1.0)
    assert not d.changed


def test_latency_well_above_its_baseline_cuts() -> None:
    state = ControlState(rate=50.0, phase="steady", baseline=0.1)
    d = decide(state, busy(50, latency=0.3), now=1.0)
    assert d.changed and d.clear_latencies
    assert d.state.rate < 50 and d.state.reason.startswith("latency")
    calm = decide(state, busy(50, latency=0.11), now=1.0)
    assert calm.state.rate > 50  # a small rise is not a signal


def test_the_ceiling_is_never_exceeded() -> None:
    state = ControlState(rate=45.0, ceiling=50.0)
    for t in range(20):
        state = decide(state, busy(state.rate), now=float(t)).state
        assert state.rate <= 50.0
    assert state.rate == 50.0 and state.reason.startswith("at ceiling")
    lowered = with_ceiling(replace(state), 20.0, now=30.0)
    assert lowered.changed and lowered.state.rate == 20.0


def test_a_cut_after_a_fast_start_from_far_below_lands_near_the_limit() -> None:
    # 2/s grows fast past a 20/s API; the slow early ticks must not drag the cut down.
    state = ControlState(rate=2.0)
    t = 0.0
    while state.rate < 30:
        state = decide(state, busy(min(state.rate, 20.0)), now=t).state
        t += 1
    cut = decide(state, Window(seconds=1.0, ok=20, throttled=2), now=t).state
    assert 16.0 <= cut.rate <= 20.0, cut
