"""The stand-in's three rate limit schemes: each admits about R per second and refuses above.

On a real server the bounds are counts over the time the client measured around its
requests: a slow machine only widens them, never fails them. The schemes' edges (the
fixed window's double burst at a boundary, the sliding window's strictness) are shown
on the limiters themselves with a hand-moved clock.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from catalog_service.cli import catalog_server
from catalog_service.limiters import (
    FIXED_WINDOW,
    SCHEMES,
    SLIDING_WINDOW,
    TOKEN_BUCKET,
    FixedWindow,
    SlidingWindow,
    TokenBucket,
)
from catalog_service.scenario import start_catalog
from tests.catalog.standin import StandIn

BURST_RATE = 10  # R of the burst test: 3R requests in a tight loop
SUSTAIN_RATE = 5  # R of the sustained test: ask until 3R were admitted


def admitted_bound(scheme: str, rate: int, seconds: float) -> int:
    """The most a scheme at `rate` can admit in an interval of `seconds`."""
    if scheme == TOKEN_BUCKET:  # a full bucket, then the refill
        return rate + math.floor(rate * seconds)
    if scheme == FIXED_WINDOW:  # every whole second the interval touches
        return rate * (math.floor(seconds) + 2)
    return rate * (math.floor(seconds) + 1)  # sliding: every one-second slice of it


def ask(session: requests.Session, url: str) -> requests.Response:
    return session.get(f"{url}/v1/products?ids=a", timeout=10)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_burst_of_three_r_is_admitted_within_the_schemes_bound(
    catalog: StandIn, scheme: str
) -> None:
    catalog.faults(rate_limit=BURST_RATE, rate_limit_scheme=scheme)
    with requests.Session() as session:
        t0 = time.monotonic()
        answers = [ask(session, catalog.url) for _ in range(3 * BURST_RATE)]
        seconds = time.monotonic() - t0
    admitted = sum(r.status_code == 200 for r in answers)
    refused = [r for r in answers if r.status_code != 200]
    assert BURST_RATE <= admitted <= admitted_bound(scheme, BURST_RATE, seconds), (
        admitted,
        seconds,
    )
    assert refused, "3R requests in a tight loop were all admitted"
    assert {(r.status_code, r.headers["Retry-After"]) for r in refused} == {(429, "1")}
    assert catalog.stats()["by_status"] == {"200": admitted, "429": len(refused)}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_asked_without_pause_it_admits_about_r_per_second(catalog: StandIn, scheme: str) -> None:
    catalog.faults(rate_limit=SUSTAIN_RATE, rate_limit_scheme=scheme)
    admitted = refused = 0
    with requests.Session() as session:
        t0 = time.monotonic()
        while admitted < 3 * SUSTAIN_RATE:
            status = ask(session, catalog.url).status_code
            admitted += status == 200
            refused += status == 429
        seconds = time.monotonic() - t0
    # 3R admitted took as long as the scheme needs for 3R at R, at least: none let more in.
    assert admitted <= admitted_bound(scheme, SUSTAIN_RATE, seconds), seconds
    assert refused > 0


def test_the_scheme_comes_from_the_command_line(tmp_path: Path) -> None:
    args = ["--rate-limit", "7", "--rate-limit-scheme", SLIDING_WINDOW]
    proc = start_catalog(log_dir=tmp_path, extra_args=args)
    try:
        knobs = requests.get(f"{proc.url}/_faults", timeout=10).json()
        with requests.Session() as session:
            t0 = time.monotonic()
            statuses = [ask(session, proc.url).status_code for _ in range(21)]
            seconds = time.monotonic() - t0
    finally:
        proc.stop()
    assert (knobs["rate_limit"], knobs["rate_limit_scheme"]) == (7.0, SLIDING_WINDOW)
    assert 7 <= statuses.count(200) <= admitted_bound(SLIDING_WINDOW, 7, seconds)
    assert 429 in statuses


def test_the_default_scheme_is_the_token_bucket(catalog: StandIn) -> None:
    assert catalog.faults()["rate_limit_scheme"] == TOKEN_BUCKET


def test_an_unknown_scheme_is_refused_in_one_line(catalog: StandIn) -> None:
    result = CliRunner().invoke(catalog_server, ["--rate-limit-scheme", "leaky"])
    assert result.exit_code == 2
    assert "'--rate-limit-scheme'" in result.output and "Traceback" not in result.output
    resp = requests.post(f"{catalog.url}/_faults", json={"rate_limit_scheme": "leaky"}, timeout=10)
    assert resp.status_code == 400 and "rate_limit_scheme must be one of" in resp.json()["error"]
    resp = requests.post(f"{catalog.url}/_faults", json={"rate_limit_scheme": 3}, timeout=10)
    assert resp.status_code == 400 and "must be a string" in resp.json()["error"]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def admit(limiter: TokenBucket | FixedWindow | SlidingWindow, n: int) -> int:
    return sum(limiter.take() == 0.0 for _ in range(n))


def test_a_fixed_window_lets_two_r_through_around_a_boundary() -> None:
    clock = Clock(100.9)
    window = FixedWindow(10, clock=clock)
    assert admit(window, 30) == 10
    assert window.take() == pytest.approx(0.1)  # until the next whole second
    clock.now = 101.0
    assert admit(window, 30) == 10  # 20 inside 0.1 s


def test_a_sliding_window_never_admits_more_than_r_in_one_second() -> None:
    clock = Clock(100.9)
    window = SlidingWindow(10, clock=clock)
    assert admit(window, 30) == 10
    clock.now = 101.0
    assert admit(window, 30) == 0
    assert window.take() == pytest.approx(0.9)  # until the first admitted is a second old
    clock.now = 101.9
    assert admit(window, 30) == 10


def test_a_token_bucket_bursts_r_then_refills_at_r() -> None:
    clock = Clock()
    bucket = TokenBucket(10, clock=clock)
    assert admit(bucket, 30) == 10
    clock.now += 0.5
    assert admit(bucket, 30) == 5
