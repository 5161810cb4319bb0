"""A request that fails as a whole for some ids' content is split: only those ids fail.

Against the real catalog stand-in, whose knobs make a whole request fail for one id's
sake: an item over the response cap, a 403/404/414/... or an unparsable body.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from backfill_engine.http_client import (
    MAX_RESPONSE_BYTES,
    FetchInterrupted,
    HttpSourceClient,
    SourceAuthError,
    SourceProtocolError,
)
from catalog_service.data import expected_item, hostile_kind, is_hostile, is_poison, is_refused
from tests.catalog.standin import StandIn
from tests.catalog_definition import CATALOG_PATH

RATE = 0.05  # share of candidate ids a per-id knob hits; the tests pick which ones to ask
MAX_RETRIES = 1
OVER_THE_CAP_CHARS = MAX_RESPONSE_BYTES + 1024  # one item alone is over the response cap
HALF_THE_CAP_CHARS = 2 * 1024 * 1024  # two of these in one answer are over it


class Counter:
    """The rate limiter's acquire, counted: every request must take a token."""

    def __init__(self) -> None:
        self.before = 0

    def before_request(self) -> None:
        self.before += 1


def client(standin: StandIn, counter: Counter, **kwargs: Any) -> HttpSourceClient:
    options: dict[str, Any] = {
        "max_retries": MAX_RETRIES,
        "backoff_seconds": 0.0,
        "read_timeout": 5.0,
        "sleep": lambda s: None,
        "before_request": counter.before_request,
        **kwargs,
    }
    return HttpSourceClient(standin.url, standin.token, path=CATALOG_PATH, **options)


def is_good(id_str: str) -> bool:
    """Whether no per-id knob at RATE touches `id_str`."""
    return not any(f(id_str, 0, RATE) for f in (is_hostile, is_refused, is_poison))


def pick(bad: Any, n_bad: int, n: int = 100) -> tuple[list[str], list[str]]:
    """`n` ids: `n_bad` for which `bad(id)` holds amid good ones."""
    candidates = [f"sku-{k}" for k in range(20_000)]
    bads = [c for c in candidates if bad(c)][:n_bad]
    goods = [c for c in candidates if is_good(c)][: n - n_bad]
    ids = goods[: len(goods) // 2] + bads + goods[len(goods) // 2 :]
    return ids, bads


def bound(bad_ids: int, n: int = 100, leaf_retries: int = 0) -> int:
    """The request budget: the whole request, then two per halving level per bad id."""
    return 1 + bad_ids * (2 * math.ceil(math.log2(n)) + leaf_retries)


@pytest.fixture
def counter() -> Counter:
    return Counter()


def is_huge(id_str: str) -> bool:
    """Whether the stand-in answers `id_str`, at hostile rate RATE, with a huge string."""
    return is_hostile(id_str, 0, RATE) and hostile_kind(id_str) == "huge_string"


def test_one_answer_over_the_cap_leaves_its_99_neighbours_answered(
    catalog: StandIn, counter: Counter
) -> None:
    catalog.faults(hostile_rate=RATE, huge_chars=OVER_THE_CAP_CHARS)
    ids, (poisoned,) = pick(is_huge, 1)
    stats: dict[str, float] = {}
    result = client(catalog, counter).fetch(ids, stats=stats)
    assert set(result.items) == set(ids) - {poisoned}
    assert all(result.items[i] == expected_item(i) for i in result.items)
    assert list(result.errors) == [poisoned]
    assert f"body over {MAX_RESPONSE_BYTES} bytes" in result.errors[poisoned]
    served = catalog.stats()
    # A lone id's oversize body is retried like any broken body (a proxy may have cut it).
    assert served["requests"] <= bound(1, leaf_retries=MAX_RETRIES)
    assert served["requests"] == counter.before == stats["requests"] == result.requests


def test_two_answers_over_the_cap_together_are_answered_apart(
    catalog: StandIn, counter: Counter
) -> None:
    # The shape seen from outside: each item is under the cap, two in one answer are not.
    catalog.faults(hostile_rate=RATE, huge_chars=HALF_THE_CAP_CHARS)
    ids, big = pick(is_huge, 2)
    result = client(catalog, counter).fetch(ids)
    assert set(result.items) == set(ids), "every id answered; the caller validates the big ones"
    assert result.errors == {}
    assert all(len(result.items[b]["brand"]) == HALF_THE_CAP_CHARS for b in big)
    assert catalog.stats()["requests"] <= bound(2)


def test_a_403_for_one_ids_content_quarantines_only_it(catalog: StandIn, counter: Counter) -> None:
    catalog.faults(refuse_rate=RATE, refuse_status=403)
    ids, (refused,) = pick(lambda s: is_refused(s, 0, RATE), 1)
    result = client(catalog, counter).fetch(ids)  # no SourceAuthError: the token is fine
    assert set(result.items) == set(ids) - {refused}
    assert result.errors == {refused: "the API refused this id even alone: HTTP 403"}
    assert result.http_status == 200
    served = catalog.stats()
    assert served["requests"] <= bound(1)
    assert served["requests"] == counter.before
    assert served["id_counts"][refused] <= 1 + math.ceil(math.log2(100))


def test_a_403_for_every_request_is_the_credentials(catalog: StandIn, counter: Counter) -> None:
    catalog.faults(refuse_rate=1.0, refuse_status=403)
    ids = [f"sku-{k}" for k in range(8)]
    with pytest.raises(SourceAuthError, match="refused every request") as exc:
        client(catalog, counter).fetch(ids)
    assert exc.value.status == 403
    # Every id alone, and every part on the way there: 2n-1 requests, no retry of any.
    assert catalog.stats()["requests"] == counter.before == 2 * len(ids) - 1


def test_a_403_for_every_request_stops_at_the_first_chunk(
    catalog: StandIn, counter: Counter
) -> None:
    catalog.faults(refuse_rate=1.0, refuse_status=403)
    ids = [f"sku-{k}" for k in range(250)]
    with pytest.raises(SourceAuthError):
        client(catalog, counter).fetch(ids)
    assert catalog.stats()["requests"] == 2 * 100 - 1, "the next chunks were not asked"


@pytest.mark.parametrize("status", [400, 404, 408, 413, 414])
def test_a_4xx_for_a_whole_request_is_split(
    catalog: StandIn, counter: Counter, status: int
) -> None:
    catalog.faults(refuse_rate=RATE, refuse_status=status)
    ids, refused = pick(lambda s: is_refused(s, 0, RATE), 2)
    result = client(catalog, counter).fetch(ids)
    assert set(result.items) == set(ids) - set(refused)
    assert result.errors == dict.fromkeys(
        refused, f"the API refused this id even alone: HTTP {status}"
    )
    assert catalog.stats()["requests"] == counter.before <= bound(2)


def test_an_unparsable_body_for_one_id_is_split(catalog: StandIn, counter: Counter) -> None:
    catalog.faults(poison_rate=RATE)
    ids, (poisoned,) = pick(lambda s: is_poison(s, 0, RATE), 1)
    result = client(catalog, counter).fetch(ids)
    assert set(result.items) == set(ids) - {poisoned}
    assert result.errors == {
        poisoned: f"the API refused this id even alone: body is not JSON ({MAX_RETRIES + 1} "
        "attempts)"
    }
    assert catalog.stats()["requests"] == counter.before <= bound(1, leaf_retries=MAX_RETRIES)


def test_a_4xx_for_every_id_is_a_protocol_error_of_the_whole(
    catalog: StandIn, counter: Counter
) -> None:
    catalog.faults(refuse_rate=1.0, refuse_status=404)
    ids = [f"sku-{k}" for k in range(4)]
    with pytest.raises(SourceProtocolError, match="HTTP 404") as exc:
        client(catalog, counter).fetch(ids)
    assert exc.value.status == 404
    assert catalog.stats()["requests"] == 2 * len(ids) - 1


def test_a_5xx_is_retried_whole_not_split(catalog: StandIn, counter: Counter) -> None:
    catalog.faults(fail_next=1)
    ids = [f"sku-{k}" for k in range(100)]
    result = client(catalog, counter).fetch(ids)
    assert set(result.items) == set(ids)
    served = catalog.stats()
    assert served["requests"] == 2
    assert set(served["id_counts"].values()) == {2}


def test_a_stopped_fetch_asks_for_no_more_parts(catalog: StandIn, counter: Counter) -> None:
    catalog.faults(refuse_rate=RATE, refuse_status=403)
    ids, _ = pick(lambda s: is_refused(s, 0, RATE), 1)
    with pytest.raises(FetchInterrupted):
        client(catalog, counter).fetch(ids, should_stop=lambda: True)
    assert catalog.stats()["requests"] == 1


def test_ids_sharing_a_refused_string_form_are_all_in_error(
    catalog: StandIn, counter: Counter
) -> None:
    catalog.faults(refuse_rate=RATE, refuse_status=403)
    number = next(k for k in range(20_000) if is_refused(str(k), 0, RATE))
    good = next(k for k in range(20_000) if is_good(str(k)))
    result = client(catalog, counter).fetch([number, str(number), good])
    assert set(result.errors) == {number, str(number)}
    assert set(result.items) == {good}
