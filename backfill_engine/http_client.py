"""The HTTP source client: one pooled requests.Session per API, with the retry policy.

Shape: a `Shape` (backfill_engine.sources) says how ids are asked for (query string, one
per path, JSON body by POST; at most 100 per request) and how a 200 answer reads. The
default is the query-string shape: `GET {base}{path}?ids=ID1,ID2,...` (each percent-encoded,
comma-separated) answering `{"items": [{"id": ...}, ...], "missing": [...]}`. An id travels
as its string form (backfill_engine.ids.id_string), and answers are mapped back to the
original `_id` values. A custom source calls `SourceHttp.get`/`post` under the same policy.

Retry policy, per HTTP request:
- connection errors, timeouts, 5xx and the request deadline (connect to last byte, see
  http_deadline) are retried up to `max_retries` times with exponential backoff and full
  jitter, then raise SourceUnavailableError;
- 429 waits `Retry-After` (capped), calls `on_throttle(seconds)` so the global limiter
  pauses every worker, and does not use up `max_retries` (a separate `max_throttled` bounds it);
- 401 raises SourceAuthError at once; a redirect is never followed (it could carry the
  token and ids to another host) and, like any status not named here (a 204, a 407),
  raises SourceProtocolError.

Failures some ids' content can cause are split, not retried whole: an oversize or broken
200 body, or a 4xx other than 401/407/429 (a 403 from a WAF, 404, 408, 413, 414, ...; a
404 of a one-id path is that id's "unknown", not a failure).
The request's ids are asked again in halves, recursively down to single ids, so only ids
refused on their own end up in `SourceResult.errors` (reason naming the status or cause) and
every other id is answered. A bad id costs at most two requests per level of halving, about
2*log2(n); a single id's broken body gets the usual retries (a proxy may have cut it), a
refused one none. If no request of the whole fetch was answered, the source refuses
everything, not some ids: every refusal a 403 raises SourceAuthError (its credentials;
the job pauses), anything else SourceProtocolError. So a 403 pauses only when no id is
accepted, which costs 2n-1 requests for n ids; a fetch of a single refused id cannot tell
the two apart and pauses.

`before_request()` (the global limiter's acquire) runs before every HTTP request, retries
and split parts included; `on_response(status, seconds)` after every answer (status 0 when
none came), so a rate controller can watch the API's health. The token never appears in
an exception or a log line.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import requests
import urllib3.exceptions

from backfill_engine.http_deadline import deadline_session, within
from backfill_engine.ids import id_string
from backfill_engine.payload import MAX_PAYLOAD_BYTES
from backfill_engine.redact import redact_text, redact_url
from backfill_engine.settings import (
    DEFAULT_HTTP_BACKOFF_SECONDS,
    DEFAULT_HTTP_CONNECT_TIMEOUT,
    DEFAULT_HTTP_MAX_RETRIES,
    DEFAULT_HTTP_READ_TIMEOUT,
    DEFAULT_HTTP_REQUEST_DEADLINE,
)
from backfill_engine.sources import MAX_IDS_PER_REQUEST, HttpRequest, Shape, SourceResult

log = logging.getLogger(__name__)

MAX_ID_CHARS = 128  # longer ids are refused by the API; reported per id instead
DEFAULT_POOL_SIZE = 16  # connections kept per host: at least the worker's thread count
DEFAULT_MAX_BACKOFF_SECONDS = 10.0
DEFAULT_MAX_THROTTLED = 20  # 429 answers tolerated for one request before giving up
DEFAULT_MAX_RETRY_AFTER_SECONDS = 60.0  # a Retry-After above this is capped, not obeyed
# The largest valid answer is 100 items of at most MAX_PAYLOAD_BYTES (under 2 MiB); twice
# that leaves room for the `missing` list and JSON framing. json.loads peaks at many times
# the body size, so a bigger body is refused while it streams, never held whole.
MAX_RESPONSE_BYTES = 2 * MAX_IDS_PER_REQUEST * MAX_PAYLOAD_BYTES  # 3.125 MiB
BODY_READ_BYTES = 64 * 1024  # one receive from the socket at most
DEFAULT_PATH = "/"

T = TypeVar("T")


# Errors


class SourceError(Exception):
    """Base of HTTP source client errors; `url` is redacted and carries no ids or token."""

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status: int | None = None,
        attempts: int = 0,
        cause: str = "",
    ) -> None:
        self.url, self.status, self.attempts = url, status, attempts
        self.cause = cause  # the last failure's reason alone, e.g. "HTTP 503"
        super().__init__(message)


class SourceUnavailableError(SourceError):
    """The API did not answer usefully within the retry budget (network, timeout, 5xx)."""


class SourceThrottledError(SourceUnavailableError):
    """The API kept answering 429 beyond `max_throttled` times."""


class SourceAuthError(SourceError):
    """401, or 403 for every id: the token is missing or wrong; retrying cannot help."""


class FetchInterrupted(SourceError):
    """The caller asked to stop between retries (its job paused, its lease lost)."""

    def __init__(self, url: str) -> None:
        super().__init__(f"request to {url} interrupted between retries", url=url)


class SourceProtocolError(SourceError):
    """The API broke its contract: unparseable body, wrong shape, unexpected status."""


class SourceRefused(SourceProtocolError):
    """A request refused for what it asks (a 4xx other than 401/404/407/429) in a custom
    source's call; uncaught, its sub-chunk's ids are quarantined as invalid."""


# Results and protocol


@dataclass(frozen=True)
class HttpAnswer:
    """A custom source's answer: 200 with its parsed JSON body, or 404 with None."""

    status: int
    body: Any


def _all_403(probe: _Probe) -> bool:
    return all(r.status == 403 for r in probe.refused.values())


def _add(stats: dict[str, float], key: str, amount: float) -> None:
    stats[key] = stats.get(key, 0) + amount


class SourceClient(Protocol):
    """Anything that fetches payloads for document ids."""

    def fetch(self, ids: Sequence[Any]) -> SourceResult:
        """Fetch payloads for `ids` (original `_id` values); the result is keyed by them."""
        ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


# Worth another attempt: the network or the server may do better next time.
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class RequestDeadlineExceeded(requests.Timeout):
    """The whole request outlived its deadline (e.g. a body trickled byte by byte)."""


class _BrokenBody(Exception):
    """A 200 whose body is not the documented JSON; retried like a 5xx."""


class _OversizeBody(_BrokenBody):
    """A 200 whose body outgrew MAX_RESPONSE_BYTES; the rest is never read."""


# 4xx answers to a whole request that some of its ids can cause (a WAF refusing content,
# a 404 for the request, a request line too long...): split, never retried whole. 401 and
# 407 are about our credentials, 429 about our rate.
_NOT_CONTENT_4XX = (401, 407, 429)


class _Refused(Exception):
    """A whole request failed in a way its ids' content can cause; its halves may not."""

    def __init__(self, reason: str, status: int | None) -> None:
        self.reason, self.status = reason, status
        super().__init__(reason)


@dataclass
class _Probe:
    """What the requests of one fetch found while splitting."""

    answered: bool = False  # some request was answered: the source takes our credentials
    refused: dict[str, _Refused] = field(default_factory=dict)  # ids refused on their own
    last: SourceProtocolError | None = None  # a lone id's body that stayed broken


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _BrokenBody("body is not JSON") from exc


def _read_with(shape: Shape, ids: list[str]) -> Callable[[bytes], SourceResult]:
    """The parser of a 200 body for a request asking `ids`, per the API's shape."""

    def read(raw: bytes) -> SourceResult:
        body = _json_body(raw)
        try:
            answer = shape.read(body, ids)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            # The body is JSON but not what the API documents (or the team's read hook
            # could not make sense of it): as garbled as a cut body.
            raise _BrokenBody(str(exc)[:200] or type(exc).__name__) from exc
        if not isinstance(answer, SourceResult):
            raise TypeError(f"the read hook returned {type(answer).__name__}, not SourceResult")
        return answer

    return read


def _receive(resp: requests.Response) -> bytes:
    """Whatever part of the body has arrived (b"" at its end), decoded; requests' errors."""
    # read1, not iter_content: iter_content waits for a whole chunk, so a trickled body
    # would never reach the deadline check between chunks.
    try:
        return bytes(resp.raw.read1(BODY_READ_BYTES, decode_content=True) or b"")
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(str(exc)) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(str(exc)) from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError) as exc:
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from None


def _environment_once(session: requests.Session, base_url: str) -> None:
    """Read the proxy and CA-bundle environment once, not on every request.

    requests re-reads proxies, NO_PROXY, netrc and REQUESTS_CA_BUNDLE per request when
    `trust_env` is on: about an eighth of the client's CPU per call. Settings a worker was
    started with are still honoured; netrc is not (a source authenticates by its token).
    """
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


class HttpSourceClient:
    """An API over HTTP: one pooled `requests.Session`, safe to share between threads.

    `path` (or a whole `shape`) is what `fetch` asks by default; a source passes its own.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        path: str = DEFAULT_PATH,
        shape: Shape | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        request_deadline: float | None = None,
        max_retries: int | None = None,
        backoff_seconds: float | None = None,
        max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS,
        max_throttled: int = DEFAULT_MAX_THROTTLED,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER_SECONDS,
        pool_size: int = DEFAULT_POOL_SIZE,
        before_request: Callable[[], None] | None = None,
        on_throttle: Callable[[float], None] | None = None,
        on_response: Callable[[int, float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        defaults = (
            DEFAULT_HTTP_CONNECT_TIMEOUT,
            DEFAULT_HTTP_READ_TIMEOUT,
            DEFAULT_HTTP_MAX_RETRIES,
            DEFAULT_HTTP_BACKOFF_SECONDS,
        )
        deadline = DEFAULT_HTTP_REQUEST_DEADLINE
        self.base_url = base_url.rstrip("/")
        self.shape = shape if shape is not None else Shape(path)
        self.path = self.shape.path
        self.safe_base = redact_url(self.base_url)
        self.safe_url = self.safe_base + self.path
        self.timeout = (
            defaults[0] if connect_timeout is None else connect_timeout,
            defaults[1] if read_timeout is None else read_timeout,
        )
        self.request_deadline = deadline if request_deadline is None else request_deadline
        self.max_retries = defaults[2] if max_retries is None else max_retries
        self.backoff_seconds = defaults[3] if backoff_seconds is None else backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_throttled = max_throttled
        self.max_retry_after = max_retry_after
        self.before_request = before_request
        self.on_throttle = on_throttle
        self.on_response = on_response
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._secrets = (token,) if token else ()
        # Our own retry loop decides; urllib3 must not retry behind its back.
        self.session = deadline_session(pool_size)
        self.session.headers.update({"Accept": "application/json", "User-Agent": "mongo-backfill"})
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        _environment_once(self.session, self.base_url)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpSourceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bound(
        self, should_stop: Callable[[], bool] | None, stats: dict[str, float] | None
    ) -> SourceHttp:
        """This client as one batch uses it: its stop signal and its statistics."""
        return SourceHttp(self, should_stop, stats)

    def fetch(
        self,
        ids: Sequence[Any],
        should_stop: Callable[[], bool] | None = None,
        stats: dict[str, float] | None = None,
        shape: Shape | None = None,
    ) -> SourceResult:
        """Fetch `ids` in requests of the shape's size; answers keyed by the original `_id`s.

        `should_stop()` is asked before every retry: a batch whose job was paused or
        whose lease was lost stops retrying (FetchInterrupted) instead of holding on.
        `stats` (the caller's own dict) gains requests, http_429, http_5xx and rate_wait_s
        as they happen, so a fetch that fails in the end still counts what it cost.
        """
        shape = self.shape if shape is None else shape
        result = SourceResult()
        # Several originals may share one string form (5 and "5"): all get the answer.
        by_str: dict[str, list[Any]] = {}
        for original in ids:
            id_str = id_string(original)
            if not id_str:
                result.errors[original] = "empty id cannot be sent to the API"
            elif len(id_str) > MAX_ID_CHARS:
                result.errors[original] = f"id longer than {MAX_ID_CHARS} characters"
            else:
                by_str.setdefault(id_str, []).append(original)
        unique = list(by_str)
        probe = _Probe()
        per = shape.ids_per_request
        for start in range(0, len(unique), per):
            chunk = unique[start : start + per]
            self._fetch_part(shape, chunk, by_str, result, probe, should_stop, stats)
            if (
                not probe.answered
                and probe.refused
                and _all_403(probe)
                and (per > 1 or len(probe.refused) >= MAX_IDS_PER_REQUEST)
            ):
                # Every id of a whole chunk (one id at a time: of as many as a chunk of the
                # default size holds) refused alone, none accepted: our credentials.
                break
        self._settle(shape, probe, by_str, result)
        return result

    def call(
        self,
        request: HttpRequest,
        should_stop: Callable[[], bool] | None = None,
        stats: dict[str, float] | None = None,
    ) -> HttpAnswer:
        """One request of a custom source, under the whole retry policy: a 200's parsed JSON,
        or a 404 (the source says what it means); other refusals raise SourceRefused."""
        result = SourceResult()
        try:
            status, body = self._request(
                request, result, should_stop, stats, parse=_json_body, answer_404=True
            )
        except _Refused as exc:
            where = self.safe_base + request.name
            raise SourceRefused(
                f"API at {where} refused the request: {exc.reason}",
                url=where,
                status=exc.status,
                attempts=result.requests,
                cause=exc.reason,
            ) from None
        return HttpAnswer(status, body)

    def _fetch_part(
        self,
        shape: Shape,
        part: list[str],
        by_str: dict[str, list[Any]],
        result: SourceResult,
        probe: _Probe,
        should_stop: Callable[[], bool] | None,
        stats: dict[str, float] | None,
    ) -> None:
        """Fetch `part` in one request; on a failure its content can cause, its halves."""
        request = shape.request(part)
        try:
            _, answer = self._request(
                request,
                result,
                should_stop,
                stats,
                alone=len(part) == 1,
                parse=_read_with(shape, part),
                answer_404=shape.not_found_is_missing and len(part) == 1,
            )
        except _Refused as exc:
            if len(part) == 1:
                probe.refused[part[0]] = exc
                return
            where = self.safe_base + request.name
            # The halves are asked like a retry: a paused job or a lost lease stops here.
            if should_stop is not None and should_stop():
                raise FetchInterrupted(where) from None
            middle = len(part) // 2
            log.info(
                "API %s: %s for %d ids; asking for them in halves", where, exc.reason, len(part)
            )
            for half in (part[:middle], part[middle:]):
                self._fetch_part(shape, half, by_str, result, probe, should_stop, stats)
            return
        except SourceProtocolError as exc:
            if len(part) != 1 or exc.status != 200:
                raise
            # A lone id whose answer stayed broken through its retries.
            probe.refused[part[0]] = _Refused(f"{exc.cause} ({exc.attempts} attempts)", 200)
            probe.last = exc
            return
        probe.answered = True
        if answer is None:  # a 404 for a one-id path: that id is unknown
            answer = SourceResult(missing=list(part))
        self._map_answer(part, by_str, answer, result)

    def _settle(
        self, shape: Shape, probe: _Probe, by_str: dict[str, list[Any]], result: SourceResult
    ) -> None:
        """Quarantine the ids refused on their own, or raise if nothing was answered at all."""
        if not probe.refused:
            return
        if not probe.answered:
            where = self.safe_base + shape.path
            first = next(iter(probe.refused.values()))
            if _all_403(probe):
                raise SourceAuthError(
                    f"API at {where} refused every request (HTTP 403), each id "
                    "alone too: it refuses our credentials",
                    url=where,
                    status=403,
                    attempts=result.requests,
                )
            if probe.last is not None and len(probe.refused) == 1:
                raise probe.last
            raise SourceProtocolError(
                f"API at {where} refused every request, each id alone too: {first.reason}",
                url=where,
                status=first.status,
                attempts=result.requests,
            )
        for id_str, refusal in probe.refused.items():
            for original in by_str[id_str]:
                result.errors[original] = f"the API refused this id even alone: {refusal.reason}"
        result.http_status = 200  # the answers that came; each refusal names its own status

    def _map_answer(
        self,
        chunk: list[str],
        by_str: dict[str, list[Any]],
        answer: SourceResult,
        result: SourceResult,
    ) -> None:
        """Put one answer (keyed by the id strings asked) into `result`, by original `_id`."""
        absent = set(answer.missing)
        for id_str in chunk:
            problem = answer.errors.get(id_str)
            if problem is None and id_str in answer.items and id_str in absent:
                problem = "the API listed this id both as item and as missing"
            if problem is None and id_str not in answer.items and id_str not in absent:
                problem = "the API response has no entry for this id"
            for original in by_str[id_str]:
                if problem is not None:
                    result.errors[original] = problem
                elif id_str in answer.items:
                    result.items[original] = answer.items[id_str]
                else:
                    result.missing.append(original)

    def _request(
        self,
        request: HttpRequest,
        result: SourceResult,
        should_stop: Callable[[], bool] | None,
        stats: dict[str, float] | None,
        *,
        parse: Callable[[bytes], T],
        alone: bool = True,
        answer_404: bool = False,
    ) -> tuple[int, T | None]:
        """Send `request` under the retry policy; (200, the parsed body) or, when
        `answer_404`, (404, None).

        _Refused when the whole request failed in a way its ids' content can cause: a 4xx
        of that kind, or (unless it asks for one id `alone`) a broken or oversize body.
        """
        where = self.safe_base + request.name
        tally: dict[str, float] = stats if stats is not None else {}
        failures = throttled = 0
        while True:
            if (failures or throttled) and should_stop is not None and should_stop():
                raise FetchInterrupted(where)
            if self.before_request is not None:
                waited = time.monotonic()
                self.before_request()
                _add(tally, "rate_wait_s", time.monotonic() - waited)
            result.requests += 1
            _add(tally, "requests", 1)
            status: int | None = None
            broken = False
            try:
                status, raw, retry_after = self._timed_send(request)
            except _OversizeBody as exc:
                status = result.http_status = 200
                if not alone:
                    raise _Refused(str(exc), 200) from None
                reason, broken = str(exc), True
            except _TRANSIENT as exc:
                reason = type(exc).__name__
            except requests.RequestException as exc:
                raise SourceError(
                    f"request to {where} failed: {type(exc).__name__}", url=where
                ) from None
            else:
                result.http_status = status
                if status == 200:
                    try:
                        return 200, parse(raw)
                    except _BrokenBody as exc:
                        if not alone:
                            raise _Refused(str(exc), 200) from None
                        reason, broken = str(exc), True
                elif status == 404 and answer_404:
                    return 404, None
                elif 400 <= status < 500 and status not in _NOT_CONTENT_4XX:
                    raise _Refused(f"HTTP {status}", status)
                elif status == 401:
                    raise SourceAuthError(
                        f"API at {where} refused the token (HTTP {status})",
                        url=where,
                        status=status,
                        attempts=failures + 1,
                    )
                elif status == 429:
                    throttled += 1
                    _add(tally, "http_429", 1)
                    paused = time.monotonic()
                    self._throttle(where, throttled, retry_after, failures)
                    _add(tally, "rate_wait_s", time.monotonic() - paused)
                    continue
                elif status >= 500:
                    _add(tally, "http_5xx", 1)
                    reason = f"HTTP {status}"
                elif 300 <= status < 400:
                    raise SourceProtocolError(
                        f"API at {where} answered a redirect (HTTP {status}); "
                        "redirects are not followed",
                        url=where,
                        status=status,
                        attempts=failures + 1,
                    )
                else:
                    raise SourceProtocolError(
                        f"API at {where} answered unexpected HTTP {status}",
                        url=where,
                        status=status,
                        attempts=failures + 1,
                    )
            failures += 1
            if failures > self.max_retries:
                error = SourceProtocolError if broken else SourceUnavailableError
                message = f"API at {where} failed after {failures} attempts: {reason}"
                raise error(
                    redact_text(message, self._secrets),
                    url=where,
                    status=status,
                    attempts=failures,
                    cause=reason,
                )
            delay = self._backoff(failures)
            # INFO, not WARNING: a retry is handled here; only the final failure is raised,
            # and the CLI must be able to print that as its one line.
            log.info(
                "API %s: %s; retry %d/%d in %.2fs", where, reason, failures, self.max_retries, delay
            )
            self._sleep(delay)

    def _timed_send(self, request: HttpRequest) -> tuple[int, bytes, str | None]:
        """`_send`, reporting the answer's status (0: none) and duration to `on_response`."""
        if self.on_response is None:
            return self._send(request)
        start, status = time.monotonic(), 0
        try:
            status, raw, retry_after = self._send(request)
        except _OversizeBody:
            status = 200
            raise
        finally:
            self.on_response(status, time.monotonic() - start)
        return status, raw, retry_after

    def _send(self, request: HttpRequest) -> tuple[int, bytes, str | None]:
        """One request with a bounded body, connect to last byte within the request deadline;
        (status, body, Retry-After)."""
        connect, read = (min(t, self.request_deadline) for t in self.timeout)
        path = request.path if request.path.startswith("/") else "/" + request.path
        with within(self.request_deadline) as deadline:
            try:
                # Never follow a redirect: it could send the request, token and ids elsewhere.
                with self.session.request(
                    request.method,
                    self.base_url + path,
                    params=dict(request.params) if request.params else None,
                    json=request.json,
                    timeout=(connect, read),
                    stream=True,
                    allow_redirects=False,
                ) as resp:
                    retry_after = resp.headers.get("Retry-After")
                    if resp.status_code != 200:
                        return resp.status_code, b"", retry_after
                    return 200, self._read_body(resp), retry_after
            except requests.RequestException:
                if deadline.expired:
                    raise self._deadline_exceeded() from None
                raise

    def _read_body(self, resp: requests.Response) -> bytes:
        """The body, read as it arrives: refused past MAX_RESPONSE_BYTES (the deadline is
        the connection's, see http_deadline)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = _receive(resp)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise _OversizeBody(f"body over {MAX_RESPONSE_BYTES} bytes")
            chunks.append(chunk)

    def _deadline_exceeded(self) -> RequestDeadlineExceeded:
        return RequestDeadlineExceeded(f"no whole answer within {self.request_deadline:g}s")

    def _throttle(self, where: str, throttled: int, header: str | None, failures: int) -> None:
        """Wait out a 429 and tell the global limiter, or give up past `max_throttled`."""
        if throttled > self.max_throttled:
            raise SourceThrottledError(
                f"API at {where} kept answering 429 ({throttled} times)",
                url=where,
                status=429,
                attempts=failures + throttled,
            )
        delay = parse_retry_after(header)
        if delay is None:
            delay = self._backoff(throttled)
        delay = min(delay, self.max_retry_after)
        log.info("API %s: 429, waiting %.2fs (Retry-After)", where, delay)
        if self.on_throttle is not None:
            # Pauses the shared bucket so every worker waits, not only this one.
            self.on_throttle(delay)
        self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1)))."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)


class SourceHttp:
    """The engine's HTTP client as one source uses it during one batch (`ctx.http`).

    Every request waits for a token of the source's rate bucket, is retried (connection
    errors, timeouts, 5xx), waits out 429 `Retry-After` for every worker, ends by the
    overall deadline, refuses a body over the cap and any redirect, never shows the token,
    stops retrying once the batch must stop, and is counted in the batch's statistics.
    """

    def __init__(
        self,
        client: HttpSourceClient,
        should_stop: Callable[[], bool] | None,
        stats: dict[str, float] | None,
    ) -> None:
        self.client, self.should_stop, self.stats = client, should_stop, stats

    def get(
        self, path: str, *, params: Mapping[str, str] | None = None, route: str | None = None
    ) -> HttpAnswer:
        """GET `path` (relative to the API's base URL): a 200's JSON body, or status 404.

        `route` names the request in logs and errors (e.g. "/ratings/{sku}" without the
        id); other 4xx raise SourceRefused, a 401 SourceAuthError (the job pauses).
        """
        request = HttpRequest("GET", path, params=params, route=route)
        return self.client.call(request, self.should_stop, self.stats)

    def post(
        self,
        path: str,
        json: Any,
        *,
        params: Mapping[str, str] | None = None,
        route: str | None = None,
    ) -> HttpAnswer:
        """POST `json` to `path`; answers as `get` does."""
        request = HttpRequest("POST", path, params=params, json=json, route=route)
        return self.client.call(request, self.should_stop, self.stats)

    def fetch(self, ids: Sequence[Any], shape: Shape | None = None) -> SourceResult:
        """Ask for `ids` in requests of `shape`, splitting refused ones (see the module)."""
        return self.client.fetch(ids, self.should_stop, self.stats, shape)
