"""HttpSourceClient against the real catalog stand-in: mapping, retries, throttling, auth."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bson import ObjectId

from backfill_engine.errors import BackfillError
from backfill_engine.http_client import (
    MAX_ID_CHARS,
    MAX_IDS_PER_REQUEST,
    MAX_RESPONSE_BYTES,
    HttpSourceClient,
    SourceAuthError,
    SourceClient,
    SourceError,
    SourceProtocolError,
    SourceThrottledError,
    SourceUnavailableError,
    parse_retry_after,
)
from backfill_engine.ids import id_string
from backfill_engine.payload import MAX_PAYLOAD_BYTES
from backfill_engine.ratelimit import RateLimiter
from backfill_engine.runtime import http_client_for
from backfill_engine.settings import Settings
from backfill_engine.sources import SourceResult
from catalog_service.data import expected_item, hostile_kind
from orchestrator.stack import free_port
from tests.catalog.standin import StandIn
from tests.catalog_definition import CATALOG_PATH, CATALOG_SOURCE

LimiterFactory = Callable[..., RateLimiter]


class Recorder:
    """Stands in for time.sleep and the limiter hooks: records calls, never waits."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.before: int = 0
        self.throttles: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def before_request(self) -> None:
        self.before += 1

    def on_throttle(self, seconds: float) -> None:
        self.throttles.append(seconds)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def client_for(standin: StandIn, rec: Recorder, **kwargs: Any) -> HttpSourceClient:
    options: dict[str, Any] = {
        "max_retries": 3,
        "backoff_seconds": 0.1,
        "read_timeout": 5.0,
        "sleep": rec.sleep,
        "before_request": rec.before_request,
        "on_throttle": rec.on_throttle,
        **kwargs,
    }
    token = options.pop("token", standin.token)
    return HttpSourceClient(standin.url, token, path=CATALOG_PATH, **options)


def test_it_satisfies_the_protocol(catalog: StandIn, rec: Recorder) -> None:
    client: SourceClient = client_for(catalog, rec)
    assert isinstance(client.fetch([]), SourceResult)


def test_answers_map_back_to_original_ids(catalog: StandIn, rec: Recorder) -> None:
    oid = ObjectId("65f0c0ffee0000000000abcd")
    ids: list[Any] = [oid, 42, "sku-1"]
    with client_for(catalog, rec) as client:
        result = client.fetch(ids)
    assert set(result.items) == {oid, 42, "sku-1"}
    assert result.items[oid] == expected_item(str(oid))
    assert result.items[42] == expected_item("42")
    assert (result.missing, result.errors, result.requests) == ([], {}, 1)
    assert catalog.stats()["id_counts"] == {str(oid): 1, "42": 1, "sku-1": 1}


@pytest.mark.parametrize(
    ("value", "text"),
    [(ObjectId("65f0c0ffee0000000000abcd"), "65f0c0ffee0000000000abcd"), (7, "7"), ("a", "a")],
)
def test_id_string_forms(value: Any, text: str) -> None:
    assert id_string(value) == text


def test_ids_sharing_a_string_form_are_fetched_once_and_all_answered(
    catalog: StandIn, rec: Recorder
) -> None:
    result = client_for(catalog, rec).fetch([5, "5"])
    assert result.items[5] == result.items["5"] == expected_item("5")
    assert catalog.stats()["id_counts"] == {"5": 1}


def test_more_than_100_ids_are_split_into_requests_of_100(catalog: StandIn, rec: Recorder) -> None:
    ids = list(range(250))
    result = client_for(catalog, rec).fetch(ids)
    assert set(result.items) == set(ids)
    stats = catalog.stats()
    assert (stats["requests"], stats["ids_requested"], result.requests) == (3, 250, 3)
    assert rec.before == 3


def test_missing_ids_are_reported_with_their_original_values(
    catalog: StandIn, rec: Recorder
) -> None:
    catalog.faults(missing_rate=1.0)
    oid = ObjectId()
    result = client_for(catalog, rec).fetch([oid, 3])
    assert (result.items, result.missing, result.errors) == ({}, [oid, 3], {})


def test_hostile_payloads_are_returned_for_the_caller_to_validate(
    catalog: StandIn, rec: Recorder
) -> None:
    catalog.faults(hostile_rate=1.0)
    ids = [f"h{i}" for i in range(40)]
    result = client_for(catalog, rec).fetch(ids)
    unattributable = {i for i in ids if hostile_kind(i) == "no_id"}
    assert unattributable, "the sample should include an entry without id"
    assert set(result.errors) == unattributable
    assert all("no entry" in result.errors[i] for i in unattributable)
    assert set(result.items) == set(ids) - unattributable


def test_too_long_or_empty_ids_are_reported_not_sent(catalog: StandIn, rec: Recorder) -> None:
    long_id = "x" * (MAX_ID_CHARS + 1)
    result = client_for(catalog, rec).fetch([long_id, "", "ok"])
    assert set(result.errors) == {long_id, ""}
    assert set(result.items) == {"ok"}
    assert catalog.stats()["id_counts"] == {"ok": 1}


def test_no_ids_means_no_request(catalog: StandIn, rec: Recorder) -> None:
    assert client_for(catalog, rec).fetch([]).requests == 0
    assert catalog.stats()["requests"] == 0


def test_5xx_is_retried_with_backoff_until_it_succeeds(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(fail_next=2)
    result = client_for(catalog, rec, max_retries=3, backoff_seconds=0.1).fetch([1, 2])
    assert set(result.items) == {1, 2}
    assert result.requests == 3
    stats = catalog.stats()
    assert stats["by_status"] == {"200": 1, "503": 2}
    assert stats["id_counts"] == {"1": 3, "2": 3}
    assert rec.before == 3  # the limiter is asked before every attempt, retries included
    # Full jitter: attempt n sleeps uniformly within [0, base * 2^(n-1)].
    assert len(rec.sleeps) == 2
    assert 0 <= rec.sleeps[0] <= 0.1 and 0 <= rec.sleeps[1] <= 0.2


def test_it_gives_up_after_max_retries(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(error_rate=1.0)
    with pytest.raises(SourceUnavailableError) as exc:
        client_for(catalog, rec, max_retries=2).fetch([1])
    assert exc.value.attempts == 3
    assert exc.value.status in (500, 502, 503)
    assert exc.value.url == f"{catalog.url}/v1/products"
    assert catalog.stats()["requests"] == 3


def test_backoff_is_capped(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(error_rate=1.0)
    client = client_for(catalog, rec, max_retries=6, backoff_seconds=1.0, max_backoff_seconds=2.0)
    with pytest.raises(SourceUnavailableError):
        client.fetch([1])
    assert len(rec.sleeps) == 6
    assert max(rec.sleeps) <= 2.0


def test_429_honours_retry_after_and_tells_the_limiter(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(throttle_next=1, retry_after=2)
    result = client_for(catalog, rec, max_retries=0).fetch(["a"])
    assert set(result.items) == {"a"}
    assert rec.throttles == [2.0]
    assert rec.sleeps == [2.0]
    assert rec.before == 2
    assert catalog.stats()["by_status"] == {"200": 1, "429": 1}


def test_a_429_does_not_use_up_the_retry_budget(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(throttle_next=3, fail_next=0)
    result = client_for(catalog, rec, max_retries=0).fetch(["a"])
    assert set(result.items) == {"a"}
    assert len(rec.throttles) == 3


def test_endless_429_gives_up(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(throttle_next=10)
    with pytest.raises(SourceThrottledError) as exc:
        client_for(catalog, rec, max_throttled=2).fetch(["a"])
    assert exc.value.status == 429
    assert catalog.stats()["requests"] == 3


def test_retry_after_is_capped(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(throttle_next=1, retry_after=3600)
    client_for(catalog, rec, max_retry_after=5.0).fetch(["a"])
    assert rec.sleeps == [5.0] and rec.throttles == [5.0]


def test_429_pauses_the_shared_redis_bucket(
    catalog: StandIn, rec: Recorder, make_limiter: LimiterFactory
) -> None:
    limiter = make_limiter(rate=100)
    catalog.faults(throttle_next=1, retry_after=30)
    client = client_for(catalog, rec, before_request=None, on_throttle=limiter.pause)
    client.fetch(["a"])
    # Another worker asking the same bucket now has to wait out the pause.
    other = make_limiter(rate=100)
    assert other.key == limiter.key
    assert 25 < other.try_acquire() <= 30


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("", None), ("soon", None), (None, None)],
)
def test_parse_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    header = "Wed, 21 Oct 2015 07:28:00 GMT"
    now = 1445412480.0 - 10  # ten seconds before that date
    assert parse_retry_after(header, now=now) == pytest.approx(10.0)


def test_401_raises_auth_error_without_retry(secured_catalog: StandIn, rec: Recorder) -> None:
    wrong = "wrong-token-value"
    with pytest.raises(SourceAuthError) as exc:
        client_for(secured_catalog, rec, token=wrong).fetch(["a"])
    assert exc.value.status == 401
    assert wrong not in str(exc.value)
    assert secured_catalog.stats()["requests"] == 1
    assert rec.sleeps == []


def test_the_right_token_is_sent(secured_catalog: StandIn, rec: Recorder) -> None:
    assert set(client_for(secured_catalog, rec).fetch(["a"]).items) == {"a"}


def test_the_token_never_reaches_errors_or_logs(
    secured_catalog: StandIn, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    assert secured_catalog.token
    secured_catalog.faults(error_rate=1.0)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceUnavailableError) as exc:
        client_for(secured_catalog, rec, max_retries=2).fetch(["a"])
    assert secured_catalog.token not in str(exc.value)
    assert secured_catalog.token not in repr(exc.value.__dict__)
    assert secured_catalog.token not in caplog.text
    assert "retry" in caplog.text


def test_read_timeout_is_retried_then_reported(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(timeout_rate=1.0, stall_ms=1500)
    with pytest.raises(SourceUnavailableError) as exc:
        client_for(catalog, rec, read_timeout=0.2, max_retries=1).fetch(["a"])
    assert "Timeout" in str(exc.value)
    assert exc.value.status is None
    assert catalog.stats()["requests"] == 2


def test_a_body_that_stays_broken_is_a_protocol_error(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(malformed_rate=1.0)
    with pytest.raises(SourceProtocolError) as exc:
        client_for(catalog, rec, max_retries=2).fetch(["a"])
    assert exc.value.attempts == 3
    assert catalog.stats()["requests"] == 3


def test_unreachable_catalog_is_unavailable(rec: Recorder) -> None:
    client = HttpSourceClient(
        f"http://127.0.0.1:{free_port()}",
        max_retries=2,
        connect_timeout=0.5,
        sleep=rec.sleep,
        before_request=rec.before_request,
    )
    with pytest.raises(SourceUnavailableError, match="ConnectionError"):
        client.fetch(["a"])
    assert rec.before == 3


def test_credentials_in_the_url_are_redacted(rec: Recorder) -> None:
    client = HttpSourceClient(
        f"http://user:s3cr3t-pw@127.0.0.1:{free_port()}", max_retries=0, sleep=rec.sleep
    )
    with pytest.raises(SourceError) as exc:
        client.fetch(["a"])
    assert "s3cr3t-pw" not in str(exc.value) and "s3cr3t-pw" not in exc.value.url


def test_client_for_a_source_uses_its_url_token_and_the_budget(secured_catalog: StandIn) -> None:
    settings = Settings(http_max_retries=4, http_read_timeout=1.5).with_source_env(
        CATALOG_URL=secured_catalog.url, CATALOG_TOKEN=secured_catalog.token
    )
    client = http_client_for(CATALOG_SOURCE.http, settings, shape=CATALOG_SOURCE.shape)
    assert client.max_retries == 4
    assert client.timeout[1] == 1.5
    assert set(client.fetch(["a"]).items) == {"a"}
    with pytest.raises(BackfillError, match="CATALOG_URL is not set"):
        http_client_for(CATALOG_SOURCE.http, Settings())


def test_all_invalid_result_puts_every_id_in_error() -> None:
    result = SourceResult.all_invalid([1, "a"], "garbage", 200)
    assert result.errors == {1: "garbage", "a": "garbage"}
    assert (result.items, result.missing, result.http_status) == ({}, [], 200)


def test_one_client_is_shared_by_many_threads(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(latency_ms=20)
    client = client_for(catalog, rec, pool_size=8)
    results: dict[int, SourceResult] = {}

    def work(n: int) -> None:
        results[n] = client.fetch([f"t{n}-{i}" for i in range(100)])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(results[n].items) == 100 for n in range(8))
    assert results[3].items["t3-7"] == expected_item("t3-7")
    stats = catalog.stats()
    assert stats["by_status"] == {"200": 8}
    assert stats["max_in_flight"] >= 2


def test_the_global_limiter_holds_the_observed_request_rate(
    catalog: StandIn, make_limiter: LimiterFactory
) -> None:
    rate = 10.0
    limiter = make_limiter(rate=rate)
    client = HttpSourceClient(
        catalog.url, path=CATALOG_PATH, before_request=lambda: limiter.acquire(max_wait=5)
    )
    stop = time.monotonic() + 1.5

    def work() -> None:
        while time.monotonic() < stop:
            client.fetch(["a"])

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = catalog.stats()
    # Any one-second window holds at most a second's refill plus the burst (+1 for the
    # few milliseconds between a grant in Redis and the request's arrival).
    assert stats["max_rate_1s"] <= rate * 1 + limiter.burst + 1
    assert stats["requests"] >= limiter.burst


OVERSIZE_BODY_CHARS = 8 * 1024 * 1024  # well under the old 64 MiB cap, far over any valid answer


def _huge_string_id(seed: int = 0) -> str:
    """An id the stand-in answers, at hostile rate 1, with a huge `brand` string."""
    return next(s for s in map(str, range(1000)) if hostile_kind(s, seed) == "huge_string")


def test_the_body_cap_is_a_small_multiple_of_the_largest_valid_answer() -> None:
    largest_valid = MAX_IDS_PER_REQUEST * MAX_PAYLOAD_BYTES
    assert largest_valid <= MAX_RESPONSE_BYTES <= 4 * largest_valid


def test_an_oversize_body_is_refused_while_streaming_then_a_protocol_error(
    catalog: StandIn, rec: Recorder
) -> None:
    catalog.faults(hostile_rate=1.0, huge_chars=OVERSIZE_BODY_CHARS)
    client = client_for(catalog, rec, max_retries=1)
    tracemalloc.start()
    try:
        with pytest.raises(SourceProtocolError) as exc:
            client.fetch([_huge_string_id()])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"body over {MAX_RESPONSE_BYTES} bytes" in str(exc.value)
    assert (exc.value.attempts, exc.value.status) == (2, 200)
    assert catalog.stats()["requests"] == 2, "retried like any malformed answer"
    assert peak < OVERSIZE_BODY_CHARS, "the oversize body was held in memory"


def test_a_trickled_body_hits_the_request_deadline_and_counts_as_a_timeout(
    catalog: StandIn, rec: Recorder
) -> None:
    # Each piece arrives well within the read timeout; only the whole answer is late.
    catalog.faults(trickle_rate=1.0, trickle_seconds=20)
    client = client_for(catalog, rec, read_timeout=5.0, request_deadline=0.5, max_retries=1)
    with pytest.raises(SourceUnavailableError) as exc:
        client.fetch(["a"])
    assert "RequestDeadlineExceeded" in str(exc.value)
    assert (exc.value.attempts, exc.value.status) == (2, None)
    assert catalog.stats()["requests"] == 2, "retried like a read timeout"


def test_a_trickled_body_within_the_deadline_arrives_whole(catalog: StandIn, rec: Recorder) -> None:
    catalog.faults(trickle_rate=1.0, trickle_seconds=0.3)
    result = client_for(catalog, rec, request_deadline=30).fetch(["a", "b"])
    assert result.items == {"a": expected_item("a"), "b": expected_item("b")}


def test_the_deadline_comes_from_settings(catalog: StandIn) -> None:
    settings = Settings.from_env(
        {
            "CATALOG_URL": catalog.url,
            "BACKFILL_HTTP_REQUEST_DEADLINE": "0.25",
            "BACKFILL_HTTP_MAX_RETRIES": "0",
        }
    )
    catalog.faults(trickle_rate=1.0, trickle_seconds=20)
    with pytest.raises(SourceUnavailableError, match="RequestDeadlineExceeded"):
        http_client_for(CATALOG_SOURCE.http, settings, shape=CATALOG_SOURCE.shape).fetch(["a"])


class _Recording(http.server.BaseHTTPRequestHandler):
    """A loopback server that answers every GET with `reply` and remembers the paths."""

    reply: tuple[int, dict[str, str], bytes] = (200, {}, b"")

    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        status, headers, body = self.reply
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _loopback_server(status: int, headers: dict[str, str], body: bytes) -> Iterator[Any]:
    handler = type("Handler", (_Recording,), {"reply": (status, headers, body)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_to_another_host_is_refused_not_followed(rec: Recorder) -> None:
    answer = json.dumps({"items": [expected_item("a")], "missing": []}).encode()
    with _loopback_server(200, {"Content-Type": "application/json"}, answer) as elsewhere:
        target = f"http://127.0.0.1:{elsewhere.server_address[1]}/v1/products?ids=a"
        with _loopback_server(302, {"Location": target}, b"") as catalog:
            client = HttpSourceClient(
                f"http://127.0.0.1:{catalog.server_address[1]}",
                "tok-never-forwarded",
                max_retries=2,
                sleep=rec.sleep,
            )
            with pytest.raises(SourceProtocolError, match=r"redirect \(HTTP 302\)") as exc:
                client.fetch(["a"])
    assert exc.value.status == 302
    assert len(catalog.paths) == 1, "a redirect is not retried"
    assert elsewhere.paths == [], "the redirect was followed"


def test_proxy_environment_is_read_once_when_the_client_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Per-request environment lookups are off (they cost an eighth of a call's CPU), so
    # the proxy a worker was started with must be taken when its client is built.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "internal.invalid")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/extra-ca.pem")
    outside = HttpSourceClient("https://api.example.invalid", path="/v1/items")
    inside = HttpSourceClient("https://catalog.internal.invalid", path="/v1/items")
    try:
        assert outside.session.trust_env is False
        assert outside.session.proxies.get("https") == "http://proxy.invalid:3128"
        assert outside.session.verify == "/etc/ssl/certs/extra-ca.pem"
        assert "https" not in inside.session.proxies  # NO_PROXY still honoured
    finally:
        outside.close()
        inside.close()
