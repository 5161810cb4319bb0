"""The catalog stand-in: a threaded HTTP server speaking the catalog API, with fault knobs.

API (what the real catalog provider serves):
  GET /v1/products?ids=ID1,ID2,...   at most 100 ids, each percent-encoded, comma-separated
      -> 200 {"items": [{"id": ..., "brand", "category", "gtin", "weight_grams", ...}],
              "missing": [...]}
  GET /v1/products/ID                -> 200 item, or 404
  401 without `Authorization: Bearer <token>` when a token is set; 429 + Retry-After when
  over the rate limit (a token bucket, a fixed or a sliding window: limiters.py); 5xx,
  stalls, trickled heads or bodies and broken bodies at the configured rates; a request
  asking for a `refuse_rate` id answers `refuse_status`, one asking for a `poison_rate`
  id a broken body, whatever its other ids.

Control endpoints for tests (no auth; the stand-in binds to loopback):
  GET /_stats[?ids=a,b][&id_counts=0]   counters (see `Stats.snapshot`); `ids` limits
                                         id_counts to those ids, `id_counts=0` omits them
  POST /_stats/reset                     zero the counters
  GET /_faults, POST /_faults {knob: value, ...}, POST /_faults/reset
  GET /healthz
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import unquote

from catalog_service import data
from catalog_service.faults import Dice, FaultConfigError, Faults
from catalog_service.limiters import Limiter, make_limiter

log = logging.getLogger(__name__)

MAX_IDS_PER_REQUEST = 100
MAX_ID_CHARS = 128  # 100 percent-encoded ids of this size still fit one request line
MAX_BODY_BYTES = 64 * 1024  # control requests only; the API takes no body
MAX_TRACKED_IDS = 1_000_000  # per-id fetch counts kept; beyond this only totals grow
MAX_CONNECTIONS = 256  # concurrent connections; more are closed at once
IDLE_TIMEOUT_SECONDS = 30.0  # an idle keep-alive connection gives its thread back
RATE_WINDOW_SECONDS = 1.0
PRODUCTS_PATH = "/v1/products"
SERVER_ERRORS = (500, 502, 503)
TRICKLE_PIECE_BYTES = 8  # a trickled body goes out this many bytes at a time...
TRICKLE_MAX_PIECES = 200  # ...in at most this many pieces (bigger pieces for a big body)


class Stats:
    """Thread-safe counters of API traffic; control endpoints are not counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_status: collections.Counter[int] = collections.Counter()
            self.ids_requested = 0
            self.ids_served = 0
            self.id_counts: dict[str, int] = {}
            self.id_counts_truncated = False
            self.max_rate_1s = 0
            # A gauge, not a counter: requests still running finish after the reset.
            self.in_flight = getattr(self, "in_flight", 0)
            self.max_in_flight = self.in_flight
            self.since = time.time()
            self._arrivals: collections.deque[float] = collections.deque()

    def arrive(self) -> None:
        """Count one API request as it arrives, for totals, concurrency and the 1 s rate."""
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            # Sliding window: the most arrivals inside any 1 s ending at an arrival.
            while self._arrivals and self._arrivals[0] <= now - RATE_WINDOW_SECONDS:
                self._arrivals.popleft()
            self._arrivals.append(now)
            self.max_rate_1s = max(self.max_rate_1s, len(self._arrivals))

    def depart(self, status: int, ids_served: int) -> None:
        with self._lock:
            self.in_flight -= 1
            self.by_status[status] += 1
            self.ids_served += ids_served

    def asked(self, ids: list[str]) -> None:
        """Count ids a request asked for, whatever its answer: proves an id was (not) re-fetched."""
        with self._lock:
            self.ids_requested += len(ids)
            for id_str in ids:
                if id_str in self.id_counts:
                    self.id_counts[id_str] += 1
                elif len(self.id_counts) < MAX_TRACKED_IDS:
                    self.id_counts[id_str] = 1
                else:
                    self.id_counts_truncated = True

    def snapshot(self, only_ids: list[str] | None = None, with_ids: bool = True) -> dict[str, Any]:
        """The /_stats JSON document."""
        with self._lock:
            if not with_ids:
                counts: dict[str, int] = {}
            elif only_ids is not None:
                counts = {i: self.id_counts.get(i, 0) for i in only_ids}
            else:
                counts = dict(self.id_counts)
            return {
                "requests": self.requests,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "ids_requested": self.ids_requested,
                "ids_served": self.ids_served,
                "id_counts": counts,
                "id_counts_truncated": self.id_counts_truncated,
                "max_rate_1s": self.max_rate_1s,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "since": self.since,
            }


class CatalogState:
    """Knobs, counters, rate bucket and dice shared by all request threads."""

    def __init__(self, faults: Faults, token: str | None = None) -> None:
        self.token = token or None
        self.stats = Stats()
        self._initial = faults
        self._lock = threading.Lock()
        self._install(faults)

    def _install(self, faults: Faults) -> None:
        self.faults = faults
        self.bucket: Limiter = make_limiter(faults.rate_limit_scheme, faults.rate_limit)
        self.dice = Dice(faults.seed)

    def update_faults(self, changes: dict[str, Any]) -> Faults:
        """Apply knob changes at run time; a new rate limit (or scheme) starts afresh."""
        with self._lock:
            self._install(self.faults.updated(changes))
            return self.faults

    def reset_faults(self) -> Faults:
        with self._lock:
            self._install(self._initial)
            return self.faults

    def countdown(self, name: str) -> bool:
        """Consume one of `fail_next`/`throttle_next`; True when one was left."""
        with self._lock:
            left = getattr(self.faults, name)
            if left <= 0:
                return False
            self.faults = self.faults.updated({name: left - 1})
            return True

    def authorized(self, header: str | None) -> bool:
        if not self.token:
            return True
        # Constant-time comparison: the stand-in should not teach timing attacks.
        return hmac.compare_digest((header or "").encode(), f"Bearer {self.token}".encode())


class BadRequest(Exception):
    """The request breaks the API contract; answered with 400 and this message."""


def parse_ids(raw: str) -> list[str]:
    """Split a comma-separated list of percent-encoded ids; BadRequest when out of contract."""
    ids = [unquote(part) for part in raw.split(",")] if raw else []
    if not ids:
        raise BadRequest("ids is required")
    if len(ids) > MAX_IDS_PER_REQUEST:
        raise BadRequest(f"at most {MAX_IDS_PER_REQUEST} ids per request, got {len(ids)}")
    for id_str in ids:
        _check_id(id_str)
    return ids


def _check_id(id_str: str) -> None:
    if not id_str:
        raise BadRequest("empty id")
    if len(id_str) > MAX_ID_CHARS:
        raise BadRequest(f"id longer than {MAX_ID_CHARS} characters")


def _query_param(query: str, name: str) -> str | None:
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value
    return None


class Reply(NamedTuple):
    """An API answer, built before it is sent so the counters see it first."""

    status: int
    body: bytes
    headers: dict[str, str]
    ids_served: int = 0
    trickle_seconds: float = 0.0  # spread the body over this long; 0 sends it at once
    trickle_head_seconds: float = 0.0  # spread the status line and headers over this long


def trickle_pieces(body: bytes, piece_bytes: int = TRICKLE_PIECE_BYTES) -> list[bytes]:
    """`body` cut into the pieces a trickled answer sends one by one."""
    size = max(piece_bytes, -(-len(body) // TRICKLE_MAX_PIECES))
    return [body[i : i + size] for i in range(0, len(body), size)] or [b""]


def _reply(
    status: int, payload: Any, headers: dict[str, str] | None = None, ids_served: int = 0
) -> Reply:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Reply(status, body, {"Content-Type": "application/json", **(headers or {})}, ids_served)


class CatalogHandler(BaseHTTPRequestHandler):
    """One request; HTTP/1.1 keep-alive so clients reuse connections."""

    protocol_version = "HTTP/1.1"
    server_version = "catalog-stand-in/1"
    timeout = IDLE_TIMEOUT_SECONDS
    # Headers and body go out in two writes; Nagle + delayed ACK would add ~40 ms to each.
    disable_nagle_algorithm = True
    server: CatalogServer

    @property
    def state(self) -> CatalogState:
        return self.server.state

    def log_message(self, format: str, *args: Any) -> None:
        # Per-request lines would flood the log during a 100k-product demo.
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        self._drain_body()
        if path == PRODUCTS_PATH or path.startswith(PRODUCTS_PATH + "/"):
            self._api(path, query)
        elif path == "/_stats":
            wanted = _query_param(query, "ids")
            # Decoded before splitting, unlike the API: `params={"ids": "a,b"}` just works.
            only = unquote(wanted).split(",") if wanted else None
            with_ids = _query_param(query, "id_counts") not in ("0", "false")
            self._json(200, self.state.stats.snapshot(only, with_ids))
        elif path == "/_faults":
            self._json(200, self.state.faults.as_dict())
        elif path == "/healthz":
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        body = self._drain_body()
        if body is None:
            return
        if path == "/_stats/reset":
            self.state.stats.reset()
            self._json(200, {"ok": True})
        elif path == "/_faults/reset":
            self._json(200, self.state.reset_faults().as_dict())
        elif path == "/_faults":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise FaultConfigError("body must be a JSON object of knob: value")
                self._json(200, self.state.update_faults(changes).as_dict())
            except (ValueError, FaultConfigError) as exc:
                self._json(400, {"error": str(exc)})
        else:
            self._json(404, {"error": "not found"})

    def _drain_body(self) -> bytes | None:
        """Read a request body (bounded) so keep-alive stays in sync; None after answering 413."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return None
        return self.rfile.read(length) if length else b""

    def _api(self, path: str, query: str) -> None:
        stats = self.state.stats
        stats.arrive()
        reply = Reply(500, b"", {})
        try:
            reply = self._serve_api(path, query)
        finally:
            # Counted before the answer leaves: a client that got its answer can read
            # /_stats and find its request there.
            stats.depart(reply.status, reply.ids_served)
        faults = self.state.faults
        if self.state.dice.hit(faults.trickle_rate):
            reply = reply._replace(trickle_seconds=faults.trickle_seconds)
        if self.state.dice.hit(faults.trickle_head_rate):
            reply = reply._replace(trickle_head_seconds=faults.trickle_seconds)
        self._send(*reply[:3], reply.trickle_seconds, reply.trickle_head_seconds)

    def _serve_api(self, path: str, query: str) -> Reply:
        state = self.state
        if not state.authorized(self.headers.get("Authorization")):
            return _reply(401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"})
        single = path != PRODUCTS_PATH
        try:
            if single:
                ids = [unquote(path[len(PRODUCTS_PATH) + 1 :])]
                _check_id(ids[0])
            else:
                ids = parse_ids(_query_param(query, "ids") or "")
        except BadRequest as exc:
            return _reply(400, {"error": str(exc)})
        state.stats.asked(ids)

        faults = state.faults
        if state.countdown("throttle_next"):
            wait = float(faults.retry_after)
        else:
            wait = state.bucket.take()
        if wait > 0:
            # Retry-After is whole seconds (RFC 9110); round up so obeying it always works.
            retry = str(max(1, int(-(-wait // 1))))
            return _reply(429, {"error": "rate limited"}, {"Retry-After": retry})

        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if state.dice.hit(faults.timeout_rate):
            time.sleep(faults.stall_ms / 1000)
        if state.countdown("fail_next"):
            return _reply(503, {"error": "injected failure"})
        if state.dice.hit(faults.error_rate):
            return _reply(state.dice.choice(SERVER_ERRORS), {"error": "injected failure"})

        # Refused or garbled as a whole for some ids' sake, as a WAF in front of an API does.
        if any(data.is_refused(i, faults.seed, faults.refuse_rate) for i in ids):
            return _reply(faults.refuse_status, {"error": "refused by policy"})
        if any(data.is_poison(i, faults.seed, faults.poison_rate) for i in ids):
            return Reply(200, b'{"items": [{"id": "', {"Content-Type": "application/json"})
        if single:
            item = data.item_for(
                ids[0], faults.seed, faults.missing_rate, faults.hostile_rate, faults.huge_chars
            )
            if item is None:
                return _reply(404, {"error": "unknown id"})
            body: Any = item
        else:
            items, missing = [], []
            for id_str in ids:
                item = data.item_for(
                    id_str, faults.seed, faults.missing_rate, faults.hostile_rate, faults.huge_chars
                )
                if item is None:
                    missing.append(id_str)
                else:
                    items.append(item)
            body = {"items": items, "missing": missing}
        if state.dice.hit(faults.malformed_rate):
            return Reply(200, self._broken_body(), {"Content-Type": "application/json"})
        return _reply(200, body, ids_served=len(ids))

    def _broken_body(self) -> bytes:
        """A 200 body the client must refuse: cut JSON, HTML, nothing, or the wrong shape."""
        return [
            b'{"items": [{"id": "',
            b"<html><body>502 Bad Gateway</body></html>",
            b"",
            b'{"items": "not a list", "missing": 7}',
        ][self.state.dice.choice((0, 1, 2, 3))]

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(*_reply(status, payload, headers)[:3])

    def _send(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str],
        trickle_seconds: float = 0.0,
        trickle_head_seconds: float = 0.0,
    ) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            if trickle_head_seconds > 0:
                # The status line and headers wait in the handler's buffer until end_headers;
                # trickle them instead, so only a deadline over the whole answer ends it.
                buffered: list[bytes] = getattr(self, "_headers_buffer", [])
                head = b"".join(buffered) + b"\r\n"
                buffered.clear()
                # A byte at a time (slowloris): each byte is soon, the head is late.
                self._trickle(head, trickle_head_seconds, piece_bytes=1)
            else:
                self.end_headers()
            if trickle_seconds > 0:
                self._trickle(body, trickle_seconds)
            else:
                self.wfile.write(body)
        except OSError:
            # The client gave up (read timeout during a stall): nothing left to tell it.
            self.close_connection = True

    def _trickle(self, body: bytes, seconds: float, piece_bytes: int = TRICKLE_PIECE_BYTES) -> None:
        """Send `body` a few bytes at a time over `seconds`: each receive is quick, the whole
        answer is slow, so only an overall deadline on the client ends it early."""
        pieces = trickle_pieces(body, piece_bytes)
        for piece in pieces:
            time.sleep(seconds / len(pieces))
            self.wfile.write(piece)
            self.wfile.flush()


class CatalogServer(ThreadingHTTPServer):
    """Thread per connection, bounded in number; threads die with the process."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: CatalogState) -> None:
        self.state = state
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, CatalogHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the connection cap: refuse, don't queue
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(host: str, port: int, faults: Faults, token: str | None = None) -> CatalogServer:
    """A bound, not yet serving, catalog stand-in; call `serve_forever()` on it."""
    return CatalogServer((host, port), CatalogState(faults, token))


def serve_until_signal(server: CatalogServer) -> None:
    """Serve until SIGTERM or Ctrl-C, then close the listening socket."""
    previous = signal.getsignal(signal.SIGTERM)

    def _on_term(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, which runs on this very
        # thread: ask from another thread or the handler would deadlock.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _on_term)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
