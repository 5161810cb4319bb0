"""`--rate auto`'s decisions as a pure function: no server needed (rate_policy.decide)."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

from backfill_engine.rate_policy import (
    APPROACH,
    CUT_FACTOR,
    HOLD_SECONDS,
    PLATEAU_SHARE,
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


def test_a_refused_probe_makes_its_rate_the_knee_and_the_rate_stays_just_below() -> None:
    # After the fast start the knee (18) is an estimate; the probe past it is refused at 20.5.
    state = ControlState(
        rate=20.5, phase="steady", knee=18.0, ok_since_cut=200, seconds_since_cut=10
    )
    cut = decide(state, Window(seconds=1.0, ok=19, throttled=1), now=100.0).state
    assert (cut.phase, cut.knee) == ("probed", 20.5)
    rates = []
    for t in range(40):
        cut = decide(cut, busy(cut.rate), now=103.0 + t).state
        rates.append(cut.rate)
    assert APPROACH * 20.5 <= rates[-1] < 20.5  # close under the limit, not past it
    plateau = [b - a for a, b in pairwise(rates) if a >= APPROACH * 20.5]
    assert plateau and all(0 < step <= PLATEAU_SHARE * 20.5 + 0.01 for step in plateau)


def test_a_per_second_window_limit_is_held_above_nine_tenths() -> None:
    # An API counting per fixed or sliding second refuses the first request over its
    # limit, and the `Retry-After` second costs half a tick's answers: probing past the
    # limit every few seconds (the 1 % probe from a knee the fast start estimated low)
    # settled at 0.85 x the limit here, as `make bench` saw 0.87 against a fixed window.
    limit = 20
    for knee in (16.0, 18.0, 20.0):
        state = ControlState(rate=0.9 * knee, phase="steady", knee=knee)
        good, refused = [], 0
        for t in range(120):
            if state.rate > limit:
                window, refused = Window(seconds=1.0, ok=limit // 2, throttled=1), refused + 1
            else:
                window = Window(seconds=1.0, ok=int(state.rate))
            good.append(window.ok)
            state = decide(state, window, now=float(t)).state
        assert sum(good[20:]) / len(good[20:]) >= 0.9 * limit, (knee, state)
        assert refused <= 3, (knee, refused)
