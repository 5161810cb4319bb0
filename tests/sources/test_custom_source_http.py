"""A custom source's own calls (`ctx.http.get`/`post`) get every safety of the engine's client.

The sources are written as a team writes them (README, "Writing a backfill": RatingBySku)
and handed their client as the engine does, `Runtime.source_client` under the source's
rate bucket in the test's Redis. Each one calls a real HTTP server on loopback that records
what it was sent, and when: 429 `Retry-After`, the body cap, redirects, the overall request
deadline, 401 and the bearer token are pinned on the calls themselves, not only through
`HttpSource.fetch` (tests/workers/test_catalog_client.py). The last test: a 200 whose
connection closes after it (Connection: close, HTTP/1.0) is read whole.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote

import pytest
import redis
from pymongo.database import Database

from backfill_engine import (
    HttpEndpoint,
    SourceAuthError,
    SourceContext,
    SourceError,
    SourceProtocolError,
    SourceRefused,
    SourceResult,
    SourceUnavailableError,
)
from backfill_engine.http_client import MAX_RESPONSE_BYTES
from backfill_engine.runtime import Runtime
from backfill_engine.settings import Settings

# Generated, so no source line a traceback shows could hold it.
TOKEN = f"ratings-token-{uuid.uuid4().hex}"
BUCKET = "ratings-api"
STARS = 4
DOCS = [{"_id": 1, "sku": "sku-1"}, {"_id": 2, "sku": "sku/2"}]
RETRY_AFTER_SECONDS = 1
DEADLINE_SECONDS = 1.0
# One byte per interval, each well within the read timeout; the whole answer takes
# TRICKLE_SECONDS, far past the deadline.
TRICKLE_INTERVAL = 0.05
TRICKLE_SECONDS = 3.0
BODY_LAG_SECONDS = 0.05  # between an answer's headers and its body
POLL_SECONDS = 0.05  # how soon a closed server's thread notices
# No backoff: a retry comes at once, so only an honoured Retry-After spaces two requests.
QUICK = {"http_backoff_seconds": 0.0, "http_read_timeout": 5.0, "http_max_retries": 1}


# --- the team's sources ----------------------------------------------------------------


class RatingBySku:
    """One GET per document, by its `sku` field (README's example)."""

    http = HttpEndpoint(url_env="RATINGS_URL", token_env="RATINGS_TOKEN")
    rate_bucket = BUCKET
    keyed_by_string = False

    def fetch(self, docs: Sequence[Any], ctx: SourceContext) -> SourceResult:
        result = SourceResult()
        for doc in docs:
            path = "/v1/rating/" + quote(doc["sku"], safe="")
            answer = ctx.http.get(path, route="/v1/rating/{sku}")
            if answer.status == 404:
                result.missing.append(doc["_id"])
            else:
                result.items[doc["_id"]] = {"rating": answer.body["stars"]}
        return result


class RatingsBySkus:
    """One POST per sub-chunk: `{"skus": [...]}` answered `{"ratings": {sku: stars}}`."""

    http = HttpEndpoint(url_env="RATINGS_URL", token_env="RATINGS_TOKEN")
    rate_bucket = BUCKET
    keyed_by_string = False

    def fetch(self, docs: Sequence[Any], ctx: SourceContext) -> SourceResult:
        answer = ctx.http.post("/v1/ratings", {"skus": [d["sku"] for d in docs]})
        stars = answer.body["ratings"]
        result = SourceResult()
        for doc in docs:
            if doc["sku"] in stars:
                result.items[doc["_id"]] = {"rating": stars[doc["sku"]]}
            else:
                result.missing.append(doc["_id"])
        return result


@pytest.fixture(params=["get", "post"])
def source(request: pytest.FixtureRequest) -> RatingBySku | RatingsBySkus:
    return RatingBySku() if request.param == "get" else RatingsBySkus()


# --- a loopback server that records what it is sent -------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the server received it; `at` is the server's monotonic clock."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Reply = Callable[["_Handler", Seen], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        at = time.monotonic()  # the request line and headers have arrived
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = Seen(at, self.command, self.path, dict(self.headers), body)
        loopback = self.server.loopback
        loopback.seen.append(seen)
        try:
            loopback.reply(self, seen)
        except OSError:
            # The client hung up mid-answer (a body over the cap, a deadline): as intended.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    loopback: Loopback


class Loopback:
    """A real HTTP server on 127.0.0.1, in a thread: answers with `reply`, records `seen`."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.seen: list[Seen] = []
        self.closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.loopback = self
        threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_SECONDS},
            daemon=True,
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self.closing.set()  # a trickling answer stops too
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], Loopback]]:
    """Start loopback servers for one test; all are closed after it."""
    started: list[Loopback] = []

    def start(reply: Reply) -> Loopback:
        started.append(Loopback(reply))
        return started[-1]

    yield start
    for server in started:
        server.close()


def rating(seen: Seen) -> dict[str, Any]:
    """The API's 200 answer to `seen`, for either source."""
    if seen.method == "POST":
        return {"ratings": dict.fromkeys(json.loads(seen.body)["skus"], STARS)}
    return {"sku": unquote(seen.path.rsplit("/", 1)[-1]), "stars": STARS}


def send(
    handler: _Handler,
    status: int,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
    reason: str | None = None,
) -> None:
    handler.send_response(status, reason)
    for name, value in (*headers, ("Content-Length", str(len(body)))):
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def answered(handler: _Handler, seen: Seen) -> None:
    send(handler, 200, json.dumps(rating(seen)).encode(), [("Content-Type", "application/json")])


# --- the client, built as the engine builds it ----------------------------------------


@pytest.fixture
def context_for(
    settings: Settings, db: Database, redis_client: redis.Redis
) -> Iterator[Callable[..., SourceContext]]:
    """`context_for(source, url, **settings)`: the SourceContext a batch hands `source`,
    its client from `Runtime.source_client` for an API at `url` with the test's token."""
    runtimes: list[Runtime] = []

    def build(source: Any, url: str, **knobs: Any) -> SourceContext:
        tuned = replace(settings, **{**QUICK, **knobs})
        rt = Runtime(tuned.with_source_env(RATINGS_URL=url, RATINGS_TOKEN=TOKEN), db, redis_client)
        runtimes.append(rt)
        return SourceContext(rt.db, {}, http_client=rt.source_client(source))

    yield build
    for rt in runtimes:
        for client in rt._http.values():
            client.close()
        rt.limiter(BUCKET).clear()


def rated(docs: Sequence[Any]) -> dict[Any, Any]:
    return {d["_id"]: {"rating": STARS} for d in docs}


# --- the safeties ------------------------------------------------------------------------


def test_a_429_is_waited_out_for_its_retry_after_then_retried(
    source: Any, serve: Callable[[Reply], Loopback], context_for: Callable[..., SourceContext]
) -> None:
    def throttled_once(handler: _Handler, seen: Seen) -> None:
        if len(api.seen) == 1:
            send(handler, 429, headers=[("Retry-After", str(RETRY_AFTER_SECONDS))])
        else:
            answered(handler, seen)

    api = serve(throttled_once)
    # No retry budget at all: a 429 must not use it up.
    ctx = context_for(source, api.url, http_max_retries=0)
    result = source.fetch(DOCS[:1], ctx)
    assert result.items == rated(DOCS[:1])
    assert len(api.seen) == 2
    assert api.seen[1].at - api.seen[0].at >= RETRY_AFTER_SECONDS
    assert (ctx.stats["requests"], ctx.stats["http_429"]) == (2, 1)


def test_an_answer_over_the_body_cap_is_refused(
    source: Any, serve: Callable[[Reply], Loopback], context_for: Callable[..., SourceContext]
) -> None:
    # Valid JSON the source could read, were it not over the cap. The cap is a constant
    # of the client (no setting makes it smaller), so the body is just over it.
    def oversize(handler: _Handler, seen: Seen) -> None:
        body = json.dumps({**rating(seen), "pad": "x" * MAX_RESPONSE_BYTES}).encode()
        send(handler, 200, body, [("Content-Type", "application/json")])

    api = serve(oversize)
    with pytest.raises(SourceProtocolError) as exc:
        source.fetch(DOCS[:1], context_for(source, api.url, http_max_retries=1))
    assert exc.value.cause == f"body over {MAX_RESPONSE_BYTES} bytes"
    assert (exc.value.status, exc.value.attempts) == (200, 2)
    assert len(api.seen) == 2, "retried like a cut body, then refused"


def test_a_redirect_is_refused_and_never_followed(
    source: Any, serve: Callable[[Reply], Loopback], context_for: Callable[..., SourceContext]
) -> None:
    elsewhere = serve(answered)

    def redirect(handler: _Handler, seen: Seen) -> None:
        send(handler, 302, headers=[("Location", elsewhere.url + seen.path)])

    api = serve(redirect)
    with pytest.raises(SourceProtocolError, match=r"redirect \(HTTP 302\)") as exc:
        source.fetch(DOCS[:1], context_for(source, api.url, http_max_retries=2))
    assert exc.value.status == 302
    assert len(api.seen) == 1, "a redirect is not retried"
    assert elsewhere.seen == [], "the redirect was followed (with the token)"


@pytest.mark.parametrize("part", ["headers", "body"])
def test_an_answer_trickled_past_the_request_deadline_is_cut_off(
    source: Any,
    serve: Callable[[Reply], Loopback],
    context_for: Callable[..., SourceContext],
    part: str,
) -> None:
    slow_bytes = int(TRICKLE_SECONDS / TRICKLE_INTERVAL)

    def trickled(handler: _Handler, seen: Seen) -> None:
        body = json.dumps(rating(seen)).encode()
        body += b" " * max(0, slow_bytes - len(body))  # JSON may end in blanks
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += b"X-Pad: " + b"p" * slow_bytes + b"\r\n"
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        quick, slow = (b"", head) if part == "headers" else (head, body)
        handler.wfile.write(quick)
        for i in range(len(slow)):
            if api.closing.is_set():
                return
            handler.wfile.write(slow[i : i + 1])
            time.sleep(TRICKLE_INTERVAL)
        if part == "headers":
            handler.wfile.write(body)

    api = serve(trickled)
    ctx = context_for(source, api.url, http_request_deadline=DEADLINE_SECONDS, http_max_retries=0)
    with pytest.raises(SourceUnavailableError) as exc:
        source.fetch(DOCS[:1], ctx)
    assert exc.value.cause == "RequestDeadlineExceeded"
    assert exc.value.status is None
    assert len(api.seen) == 1


def test_a_401_is_an_auth_error_at_once(
    source: Any, serve: Callable[[Reply], Loopback], context_for: Callable[..., SourceContext]
) -> None:
    api = serve(lambda handler, seen: send(handler, 401, b'{"error": "unauthorized"}'))
    with pytest.raises(SourceAuthError) as exc:
        source.fetch(DOCS[:1], context_for(source, api.url, http_max_retries=2))
    assert exc.value.status == 401
    assert len(api.seen) == 1, "a refused token is not retried"


def _echoing(status: int, api_url: Callable[[], str]) -> Reply:
    """An answer of `status` that sends the caller's Authorization back every way it can."""

    def reply(handler: _Handler, seen: Seen) -> None:
        echoed = seen.headers.get("Authorization", "")
        body = f"not JSON: you sent {echoed!r}".encode()
        headers = [
            ("WWW-Authenticate", f'Bearer error="invalid_token", token="{echoed}"'),
            ("Location", f"{api_url()}/login?token={echoed}"),
        ]
        send(handler, status, body, headers, reason=f"Denied {echoed}")

    return reply


def _shown(exc: BaseException) -> str:
    """Everything an error shows a person or a log: message, fields, formatted traceback."""
    return "\n".join(
        [str(exc), repr(exc), repr(vars(exc)), "".join(traceback.format_exception(exc))]
    )


def test_the_bearer_token_is_sent_and_never_shown(
    source: Any,
    serve: Callable[[Reply], Loopback],
    context_for: Callable[..., SourceContext],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    api = serve(answered)
    ctx = context_for(source, api.url, http_max_retries=1)
    assert source.fetch(DOCS, ctx).items == rated(DOCS)
    assert api.seen and all(s.headers["Authorization"] == f"Bearer {TOKEN}" for s in api.seen)
    # Every way a call can fail, each answer echoing the token in its status line,
    # headers and body.
    expected: dict[int, type[SourceError]] = {
        500: SourceUnavailableError,  # retried, logged, then raised
        200: SourceProtocolError,  # a body that is not JSON: retried, then raised
        403: SourceRefused,
        401: SourceAuthError,
        302: SourceProtocolError,
    }
    for status, error in expected.items():
        api.reply = _echoing(status, lambda: api.url)
        with pytest.raises(error) as exc:
            source.fetch(DOCS[:1], ctx)
        assert exc.value.status == status
        assert TOKEN not in _shown(exc.value), status
    assert "retry" in caplog.text  # the retries were logged
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            assert TOKEN not in _shown(record.exc_info[1])


def test_a_200_that_closes_its_connection_is_read_whole(
    source: Any, serve: Callable[[Reply], Loopback], context_for: Callable[..., SourceContext]
) -> None:
    def closing(handler: _Handler, seen: Seen) -> None:
        body = json.dumps(rating(seen)).encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        time.sleep(BODY_LAG_SECONDS)  # the body is not in the headers' segment
        handler.wfile.write(body)

    api = serve(closing)
    assert source.fetch(DOCS[:1], context_for(source, api.url)).items == rated(DOCS[:1])
