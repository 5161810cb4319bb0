"""How `--rate auto` moves a bucket's rate: a pure function of its state and one window.

Additive increase while the API answers well, multiplicative cut when it pushes back
(429, or latency well above its recent baseline). No I/O here: rate_control.py feeds it
what every worker observed and stores what it returns.

- **Start.** Until the API first pushes back, the rate grows by START_FACTOR per tick
  (TCP's slow start), so a start ten times too low is corrected within seconds.
- **Cut.** On a 429 the rate becomes CUT_FACTOR x what the API sustained since the last
  cut: the mean rate of good answers (pauses included), or the best tick's if that is
  higher (after a fast start from far below, the mean is dragged down by the slow early
  ticks) — never above the current rate. A latency rise cuts by LATENCY_CUT_FACTOR.
  For HOLD_SECONDS after a cut nothing changes: answers to requests sent before it are
  echoes of the same overshoot.
- **The knee.** Where the API pushed back. After the fast start it is only an estimate
  (phase "steady": what the API sustained while the rate was still rising), so above it
  the rate explores by EXPLORE_SHARE per tick. Once a slow probe past it is refused, the
  rate it was probing at is the API's limit, better than any mean (phase "probed").
- **Approach, plateau, probe.** Below APPROACH x the knee the rate closes half the gap per
  tick. Just below a probed knee it creeps by PLATEAU_SHARE per tick: an API that counts
  per fixed or sliding second refuses the first request over its limit, and each refusal
  costs a whole `Retry-After` second of every worker plus a cut, so it pays to stay
  close under the limit rather than find it again every few seconds. Above the knee it
  creeps up by PROBE_SHARE per tick, so the next 429 comes late.
- Only a busy bucket grows: when the workers do not use the rate they have, more of it
  would only become a burst later.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

START_FACTOR = 1.5  # per tick, until the first cut
CUT_FACTOR = 0.9  # x the sustained rate, on 429
PEAK_SHARE = 1.0  # the best tick's good-answer rate counts at this share as "sustained"
LATENCY_CUT_FACTOR = 0.8  # x the current rate, on a latency rise
APPROACH = 0.95  # fast climb up to this share of the knee...
PROBE_SHARE = 0.01  # ...then this share of the rate per tick above the knee...
PLATEAU_SHARE = 0.001  # ...this share just below a knee found by probing...
EXPLORE_SHARE = 0.03  # ...and this share above a knee the fast start only estimated
MIN_PLATEAU_STEP = 0.01  # requests/s
MIN_PROBE_STEP = 0.1  # requests/s: a tiny rate still probes upwards
HOLD_SECONDS = 2.0  # after a cut, let its effect show before deciding again
BUSY_SHARE = 0.8  # grow only when the workers used this share of the rate
ERROR_SHARE = 0.05  # 5xx and transport errors above this share of answers: do not grow
LATENCY_SAMPLES = 50  # the last N answers' latencies, across all workers
MIN_LATENCY_SAMPLES = 20  # fewer than this say nothing about latency
LATENCY_FACTOR = 2.0  # p50 above this x the baseline is "well above"...
MIN_LATENCY_RISE_SECONDS = 0.05  # ...and by at least this much (loopback jitter is not a signal)
BASELINE_ALPHA = 0.1  # EWMA weight of each tick's p50 in the baseline
MIN_RATE = 0.1  # requests/s: never stop completely
MAX_RATE = 1_000_000.0


@dataclass(frozen=True)
class Window:
    """What the workers observed since the controller's last tick."""

    seconds: float
    ok: int = 0  # 200 answers
    throttled: int = 0  # 429 answers
    other: int = 0  # 5xx, other statuses, no answer at all
    latencies: tuple[float, ...] = ()  # seconds, the last LATENCY_SAMPLES good answers

    @property
    def answers(self) -> int:
        return self.ok + self.throttled + self.other


@dataclass(frozen=True)
class ControlState:
    """Everything the controller remembers between ticks (stored in Redis, any holder resumes)."""

    rate: float
    ceiling: float | None = None
    # "start" until the first cut, "steady" after it, "probed" once a probe past the knee
    # was refused
    phase: str = "start"
    knee: float = 0.0  # where the API last pushed back (see the module's docstring)
    baseline: float = 0.0  # EWMA of p50 latency (s) while latency was normal
    hold_until: float = 0.0  # server time (s) before which nothing changes
    ok_since_cut: int = 0
    seconds_since_cut: float = 0.0
    peak_ok: float = 0.0  # the best tick's good answers/s since the last cut
    reason: str = "start"
    changed_at: float = 0.0


@dataclass(frozen=True)
class Decision:
    state: ControlState
    changed: bool
    clear_latencies: bool = False  # samples taken at the old rate would trigger another cut


def clamp(rate: float, ceiling: float | None) -> float:
    top = MAX_RATE if ceiling is None else min(ceiling, MAX_RATE)
    return max(MIN_RATE, min(rate, top))


def decide(state: ControlState, window: Window, now: float) -> Decision:
    """The bucket's next state after `window`, observed up to server time `now`."""
    ok_since = state.ok_since_cut + window.ok
    seconds_since = state.seconds_since_cut + max(window.seconds, 0.0)
    ok_rate = window.ok / window.seconds if window.seconds > 0 else 0.0
    peak = max(state.peak_ok, ok_rate)
    state = replace(state, ok_since_cut=ok_since, seconds_since_cut=seconds_since, peak_ok=peak)
    held = now < state.hold_until

    if window.throttled and not held:
        mean = ok_since / seconds_since if seconds_since > 0 else state.rate
        sustained = max(mean, PEAK_SHARE * peak)
        base = min(state.rate, sustained) if sustained > 0 else state.rate
        reason = f"429 on {window.throttled} of {window.answers} requests"
        if state.phase == "start":
            # The rate overshot by up to START_FACTOR within one tick: what the API
            # sustained meanwhile is the best estimate of its limit.
            return _cut(state, base * CUT_FACTOR, max(sustained, MIN_RATE), reason, now)
        # Refused while growing slowly: the API's limit is about the rate we were at.
        return _cut(state, base * CUT_FACTOR, max(state.rate, MIN_RATE), reason, now, "probed")

    p50 = statistics.median(window.latencies) if len(window.latencies) >= MIN_LATENCY_SAMPLES else 0
    if p50 and state.baseline > 0 and _elevated(p50, state.baseline):
        if held:
            return Decision(state, changed=False)
        reason = f"latency p50 {p50 * 1000:.0f} ms > {LATENCY_FACTOR:g}x baseline " + (
            f"{state.baseline * 1000:.0f} ms"
        )
        phase = "probed" if state.phase == "probed" else "steady"
        cut = _cut(state, state.rate * LATENCY_CUT_FACTOR, state.knee, reason, now, phase)
        return replace(cut, clear_latencies=True)
    if p50:
        baseline = p50 if state.baseline <= 0 else state.baseline
        state = replace(state, baseline=baseline + BASELINE_ALPHA * (p50 - baseline))

    if held or window.throttled or not _may_grow(state, window):
        return Decision(state, changed=False)
    if state.phase == "start":
        target, reason = state.rate * START_FACTOR, "no pushback yet: fast start"
    elif state.knee and state.rate < APPROACH * state.knee:
        gap = APPROACH * state.knee - state.rate
        target, reason = state.rate + max(gap / 2, MIN_PROBE_STEP), "answering well: approach"
    elif state.phase == "probed" and state.rate < state.knee:
        step = max(state.rate * PLATEAU_SHARE, MIN_PLATEAU_STEP)
        target, reason = min(state.rate + step, state.knee), "answering well: plateau"
    else:
        estimated = state.phase == "steady" and state.rate >= state.knee
        step = max(state.rate * (EXPLORE_SHARE if estimated else PROBE_SHARE), MIN_PROBE_STEP)
        target, reason = state.rate + step, "answering well: probe"
    new = clamp(target, state.ceiling)
    if new <= state.rate:
        return Decision(state, changed=False)
    if state.ceiling is not None and new >= state.ceiling:
        reason = f"at ceiling {state.ceiling:g}/s"
    return Decision(replace(state, rate=new, reason=reason, changed_at=now), changed=True)


def with_ceiling(state: ControlState, ceiling: float | None, now: float) -> Decision:
    """Apply an operator's (new) ceiling; a rate above it drops at once."""
    state = replace(state, ceiling=ceiling)
    new = clamp(state.rate, ceiling)
    if new == state.rate:
        return Decision(state, changed=False)
    reason = f"at ceiling {ceiling:g}/s" if ceiling is not None else state.reason
    return Decision(replace(state, rate=new, reason=reason, changed_at=now), changed=True)


def _elevated(p50: float, baseline: float) -> bool:
    return p50 > max(LATENCY_FACTOR * baseline, baseline + MIN_LATENCY_RISE_SECONDS)


def _may_grow(state: ControlState, window: Window) -> bool:
    if window.seconds <= 0 or window.answers == 0:
        return False
    if window.other > ERROR_SHARE * window.answers:
        return False
    return window.answers / window.seconds >= BUSY_SHARE * state.rate


def _cut(
    state: ControlState,
    target: float,
    knee: float,
    reason: str,
    now: float,
    phase: str = "steady",
) -> Decision:
    new = clamp(min(target, state.rate), state.ceiling)
    cut = replace(
        state,
        rate=new,
        phase=phase,
        knee=knee,
        hold_until=now + HOLD_SECONDS,
        ok_since_cut=0,
        seconds_since_cut=0.0,
        peak_ok=0.0,
        reason=reason,
        changed_at=now,
    )
    return Decision(cut, changed=True)
