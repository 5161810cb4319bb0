"""The HTTP source client: one pooled requests.Session per API, with the retry policy.

Contract: `GET {base}{path}?ids=ID1,ID2,...` (at most 100 ids, each percent-encoded,
comma-separated) answers `{"items": [{"id": ...}, ...], "missing": [...]}`. An id travels
as its string form (ObjectId hex, int in decimal, str as is, anything else `str()`), and
answers are mapped back to the original `_id` values.

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
200 body, or a 4xx other than 401/407/429 (a 403 from a WAF, 404, 408, 413, 414, ...).
The request's ids are asked again in halves, recursively down to single ids, so only ids
refused on their own end up in `FetchResult.errors` (reason naming the status or cause) and
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import requests
import urllib3.exceptions
from bson import ObjectId

from backfill_engine.http_deadline import deadline_session, within
from backfill_engine.payload import MAX_PAYLOAD_BYTES
from backfill_engine.redact import redact_text, redact_url
from backfill_engine.settings import (
    DEFAULT_HTTP_BACKOFF_SECONDS,
    DEFAULT_HTTP_CONNECT_TIMEOUT,
    DEFAULT_HTTP_MAX_RETRIES,
    DEFAULT_HTTP_READ_TIMEOUT,
    DEFAULT_HTTP_REQUEST_DEADLINE,
)

log = logging.getLogger(__name__)

MAX_IDS_PER_REQUEST = 100  # the API refuses more
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


# Results and protocol


@dataclass
class FetchResult:
    """Answers keyed by the caller's original `_id` values."""

    items: dict[Any, dict[str, Any]] = field(default_factory=dict)
    missing: list[Any] = field(default_factory=list)
    errors: dict[Any, str] = field(default_factory=dict)  # per-id problems, e.g. malformed entry
    requests: int = 0  # HTTP requests made, retries included
    http_status: int | None = None  # status of the last answer (200 once answered)

    @classmethod
    def empty(cls) -> FetchResult:
        """The answer for no ids."""
        return cls()

    @classmethod
    def all_invalid(cls, ids: Sequence[Any], reason: str, status: int | None = None) -> FetchResult:
        """Every id in error with `reason`, e.g. after the API kept sending garbage."""
        return cls(errors=dict.fromkeys(ids, reason), http_status=status)

    def merge(self, other: FetchResult) -> None:
        """Fold `other` (another chunk's answer) into this one."""
        self.items.update(other.items)
        self.missing.extend(other.missing)
        self.errors.update(other.errors)
        self.requests += other.requests
        if other.http_status is not None:
            self.http_status = other.http_status


def _all_403(probe: _Probe) -> bool:
    return all(r.status == 403 for r in probe.refused.values())


def _add(stats: dict[str, float], key: str, amount: float) -> None:
    stats[key] = stats.get(key, 0) + amount


class SourceClient(Protocol):
    """Anything that fetches payloads for document ids."""

    def fetch(self, ids: Sequence[Any]) -> FetchResult:
        """Fetch payloads for `ids` (original `_id` values); the result is keyed by them."""
        ...


def id_string(value: Any) -> str:
    """The string form an `_id` travels as: ObjectId hex, int in decimal, str as is."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    return value if isinstance(value, str) else str(value)


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


def _parse_body(raw: bytes) -> tuple[list[Any], list[Any]]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _BrokenBody("body is not JSON") from exc
    if not isinstance(body, dict):
        raise _BrokenBody("body is not a JSON object")
    items, missing = body.get("items"), body.get("missing", [])
    if not isinstance(items, list) or not isinstance(missing, list):
        raise _BrokenBody("body lacks the items/missing lists")
    return items, missing


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
    """An API over HTTP: one pooled `requests.Session`, safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        path: str = DEFAULT_PATH,
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
        self.path = path
        self.safe_url = redact_url(self.base_url) + path
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

    def fetch(
        self,
        ids: Sequence[Any],
        should_stop: Callable[[], bool] | None = None,
        stats: dict[str, float] | None = None,
    ) -> FetchResult:
        """Fetch `ids` in requests of at most 100; answers keyed by the original `_id`s.

        `should_stop()` is asked before every retry: a batch whose job was paused or
        whose lease was lost stops retrying (FetchInterrupted) instead of holding on.
        `stats` (the caller's own dict) gains requests, http_429, http_5xx and rate_wait_s
        as they happen, so a fetch that fails in the end still counts what it cost.
        """
        result = FetchResult()
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
        for start in range(0, len(unique), MAX_IDS_PER_REQUEST):
            chunk = unique[start : start + MAX_IDS_PER_REQUEST]
            self._fetch_part(chunk, by_str, result, probe, should_stop, stats)
            if not probe.answered and probe.refused and _all_403(probe):
                # Every id of a whole chunk refused alone, none accepted: our credentials.
                break
        self._settle(probe, by_str, result)
        return result

    def _fetch_part(
        self,
        part: list[str],
        by_str: dict[str, list[Any]],
        result: FetchResult,
        probe: _Probe,
        should_stop: Callable[[], bool] | None,
        stats: dict[str, float] | None,
    ) -> None:
        """Fetch `part` in one request; on a failure its content can cause, its halves."""
        query = ",".join(quote(s, safe="") for s in part)
        url = f"{self.base_url}{self.path}?ids={query}"
        try:
            items, missing = self._request(url, result, should_stop, stats, alone=len(part) == 1)
        except _Refused as exc:
            if len(part) == 1:
                probe.refused[part[0]] = exc
                return
            # The halves are asked like a retry: a paused job or a lost lease stops here.
            if should_stop is not None and should_stop():
                raise FetchInterrupted(self.safe_url) from None
            middle = len(part) // 2
            log.info(
                "API %s: %s for %d ids; asking for them in halves",
                self.safe_url,
                exc.reason,
                len(part),
            )
            for half in (part[:middle], part[middle:]):
                self._fetch_part(half, by_str, result, probe, should_stop, stats)
            return
        except SourceProtocolError as exc:
            if len(part) != 1 or exc.status != 200:
                raise
            # A lone id whose answer stayed broken through its retries.
            probe.refused[part[0]] = _Refused(f"{exc.cause} ({exc.attempts} attempts)", 200)
            probe.last = exc
            return
        probe.answered = True
        self._map_answer(part, by_str, items, missing, result)

    def _settle(self, probe: _Probe, by_str: dict[str, list[Any]], result: FetchResult) -> None:
        """Quarantine the ids refused on their own, or raise if nothing was answered at all."""
        if not probe.refused:
            return
        if not probe.answered:
            first = next(iter(probe.refused.values()))
            if _all_403(probe):
                raise SourceAuthError(
                    f"API at {self.safe_url} refused every request (HTTP 403), each id "
                    "alone too: it refuses our credentials",
                    url=self.safe_url,
                    status=403,
                    attempts=result.requests,
                )
            if probe.last is not None and len(probe.refused) == 1:
                raise probe.last
            raise SourceProtocolError(
                f"API at {self.safe_url} refused every request, each id alone too: {first.reason}",
                url=self.safe_url,
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
        items: list[Any],
        missing: list[Any],
        result: FetchResult,
    ) -> None:
        """Put one answer's items, missing ids and per-id problems into `result`."""
        wanted = set(chunk)
        found: dict[str, dict[str, Any]] = {}
        problems: dict[str, str] = {}
        for entry in items:
            entry_id = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(entry_id, str) or entry_id not in wanted:
                # Cannot be attributed to a requested id; the ids it should have answered
                # end up "absent" below.
                continue
            if entry_id in found:
                problems[entry_id] = "the API answered this id twice"
            found[entry_id] = entry
        absent = {m for m in missing if isinstance(m, str) and m in wanted}
        for id_str in chunk:
            originals = by_str[id_str]
            if id_str in found and id_str in absent:
                problem: str | None = "the API listed this id both as item and as missing"
            else:
                problem = problems.get(id_str)
            if problem is None and id_str not in found and id_str not in absent:
                problem = "the API response has no entry for this id"
            for original in originals:
                if problem is not None:
                    result.errors[original] = problem
                elif id_str in found:
                    result.items[original] = found[id_str]
                else:
                    result.missing.append(original)

    def _request(
        self,
        url: str,
        result: FetchResult,
        should_stop: Callable[[], bool] | None = None,
        stats: dict[str, float] | None = None,
        *,
        alone: bool = True,
    ) -> tuple[list[Any], list[Any]]:
        """GET `url` under the retry policy; return the body's (items, missing).

        _Refused when the whole request failed in a way its ids' content can cause: a 4xx
        of that kind, or (unless it asks for one id `alone`) a broken or oversize body.
        """
        tally: dict[str, float] = stats if stats is not None else {}
        failures = throttled = 0
        while True:
            if (failures or throttled) and should_stop is not None and should_stop():
                raise FetchInterrupted(self.safe_url)
            if self.before_request is not None:
                waited = time.monotonic()
                self.before_request()
                _add(tally, "rate_wait_s", time.monotonic() - waited)
            result.requests += 1
            _add(tally, "requests", 1)
            status: int | None = None
            broken = False
            try:
                status, raw, retry_after = self._timed_get(url)
            except _OversizeBody as exc:
                status = result.http_status = 200
                if not alone:
                    raise _Refused(str(exc), 200) from None
                reason, broken = str(exc), True
            except _TRANSIENT as exc:
                reason = type(exc).__name__
            except requests.RequestException as exc:
                raise SourceError(
                    f"request to {self.safe_url} failed: {type(exc).__name__}",
                    url=self.safe_url,
                ) from None
            else:
                result.http_status = status
                if status == 200:
                    try:
                        return _parse_body(raw)
                    except _BrokenBody as exc:
                        if not alone:
                            raise _Refused(str(exc), 200) from None
                        reason, broken = str(exc), True
                elif 400 <= status < 500 and status not in _NOT_CONTENT_4XX:
                    raise _Refused(f"HTTP {status}", status)
                elif status == 401:
                    raise SourceAuthError(
                        f"API at {self.safe_url} refused the token (HTTP {status})",
                        url=self.safe_url,
                        status=status,
                        attempts=failures + 1,
                    )
                elif status == 429:
                    throttled += 1
                    _add(tally, "http_429", 1)
                    paused = time.monotonic()
                    self._throttle(throttled, retry_after, failures)
                    _add(tally, "rate_wait_s", time.monotonic() - paused)
                    continue
                elif status >= 500:
                    _add(tally, "http_5xx", 1)
                    reason = f"HTTP {status}"
                elif 300 <= status < 400:
                    raise SourceProtocolError(
                        f"API at {self.safe_url} answered a redirect (HTTP {status}); "
                        "redirects are not followed",
                        url=self.safe_url,
                        status=status,
                        attempts=failures + 1,
                    )
                else:
                    raise SourceProtocolError(
                        f"API at {self.safe_url} answered unexpected HTTP {status}",
                        url=self.safe_url,
                        status=status,
                        attempts=failures + 1,
                    )
            failures += 1
            if failures > self.max_retries:
                error = SourceProtocolError if broken else SourceUnavailableError
                message = f"API at {self.safe_url} failed after {failures} attempts: {reason}"
                raise error(
                    redact_text(message, self._secrets),
                    url=self.safe_url,
                    status=status,
                    attempts=failures,
                    cause=reason,
                )
            delay = self._backoff(failures)
            # INFO, not WARNING: a retry is handled here; only the final failure is raised,
            # and the CLI must be able to print that as its one line.
            log.info(
                "API %s: %s; retry %d/%d in %.2fs",
                self.safe_url,
                reason,
                failures,
                self.max_retries,
                delay,
            )
            self._sleep(delay)

    def _timed_get(self, url: str) -> tuple[int, bytes, str | None]:
        """`_get`, reporting the answer's status (0: none) and duration to `on_response`."""
        if self.on_response is None:
            return self._get(url)
        start, status = time.monotonic(), 0
        try:
            status, raw, retry_after = self._get(url)
        except _OversizeBody:
            status = 200
            raise
        finally:
            self.on_response(status, time.monotonic() - start)
        return status, raw, retry_after

    def _get(self, url: str) -> tuple[int, bytes, str | None]:
        """One GET with a bounded body, connect to last byte within the request deadline;
        (status, body, Retry-After)."""
        connect, read = (min(t, self.request_deadline) for t in self.timeout)
        with within(self.request_deadline) as deadline:
            try:
                # Never follow a redirect: it could send the request, token and ids elsewhere.
                with self.session.get(
                    url, timeout=(connect, read), stream=True, allow_redirects=False
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

    def _throttle(self, throttled: int, header: str | None, failures: int) -> None:
        """Wait out a 429 and tell the global limiter, or give up past `max_throttled`."""
        if throttled > self.max_throttled:
            raise SourceThrottledError(
                f"API at {self.safe_url} kept answering 429 ({throttled} times)",
                url=self.safe_url,
                status=429,
                attempts=failures + throttled,
            )
        delay = parse_retry_after(header)
        if delay is None:
            delay = self._backoff(throttled)
        delay = min(delay, self.max_retry_after)
        log.info("API %s: 429, waiting %.2fs (Retry-After)", self.safe_url, delay)
        if self.on_throttle is not None:
            # Pauses the shared bucket so every worker waits, not only this one.
            self.on_throttle(delay)
        self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1)))."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)
