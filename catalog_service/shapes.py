"""Stand-ins for APIs of other shapes than the catalog's, serving the catalog's data.

`python -m catalog_service.shapes --shape lookup|items --port N [--token T]` runs one:

  lookup:  POST /lookup {"skus": [ID, ...]}  at most MAX_SKUS ids
           -> 200 {"data": [{"sku": ID, "brand", "category", "gtin", "weight_grams", ...}]}
              (unknown ids are simply left out)
  items:   GET /items/ID  -> 200 {"id": ID, "brand", ...}, or 404 for an unknown id

The items are `catalog_service.data.item_for` (so `expected_item` tells a test what
lands). 401 without `Authorization: Bearer <token>` when a token is set.

Control endpoints for tests (no auth; loopback only):
  GET /_stats           {"requests", "by_status", "ids_requested", "max_rate_1s", ...}
  POST /_stats/reset    zero the counters
  POST /_faults {knob: value}, POST /_faults/reset   knobs: missing_rate, rate_limit
      (requests/s before 429 + Retry-After), fail_next (answer the next N requests 503),
      refuse (ids whose presence makes a whole request answer refuse_status), refuse_status
  GET /healthz
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from catalog_service import data
from catalog_service.limiters import TokenBucket
from catalog_service.server import Stats, serve_until_signal

if TYPE_CHECKING:
    from orchestrator.stack import ManagedProcess

log = logging.getLogger(__name__)

SHAPES = ("lookup", "items")
LOOKUP_PATH = "/lookup"
ITEMS_PATH = "/items/"
MAX_SKUS = 50  # ids per lookup request; more are refused with 400
MAX_BODY_BYTES = 64 * 1024
MAX_ID_CHARS = 128
IDLE_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Knobs:
    """Run-time faults of a shapes stand-in."""

    missing_rate: float = 0.0
    rate_limit: float = 0.0
    fail_next: int = 0
    refuse: tuple[str, ...] = ()
    refuse_status: int = 403
    seed: int = 0

    def updated(self, changes: dict[str, Any]) -> Knobs:
        """These knobs with `changes` applied; ValueError naming a bad one."""
        out: dict[str, Any] = {}
        for name, value in changes.items():
            if name in ("missing_rate", "rate_limit"):
                out[name] = float(value)
            elif name in ("fail_next", "refuse_status", "seed"):
                out[name] = int(value)
            elif name == "refuse":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError("refuse must be a list of id strings")
                out[name] = tuple(value)
            else:
                raise ValueError(f"unknown knob {name!r}")
        return replace(self, **out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "missing_rate": self.missing_rate,
            "rate_limit": self.rate_limit,
            "fail_next": self.fail_next,
            "refuse": list(self.refuse),
            "refuse_status": self.refuse_status,
            "seed": self.seed,
        }


@dataclass
class ShapeState:
    """What every request thread of one stand-in shares."""

    shape: str
    token: str | None = None
    knobs: Knobs = field(default_factory=Knobs)
    stats: Stats = field(default_factory=Stats)
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(0.0))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_knobs(self, knobs: Knobs) -> Knobs:
        with self.lock:
            self.knobs = knobs
            self.bucket = TokenBucket(knobs.rate_limit, burst=1.0)
            return knobs

    def fail_now(self) -> bool:
        """Consume one `fail_next`; True when one was left."""
        with self.lock:
            if self.knobs.fail_next <= 0:
                return False
            self.knobs = replace(self.knobs, fail_next=self.knobs.fail_next - 1)
            return True


class ShapeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shapes-stand-in/1"
    timeout = IDLE_TIMEOUT_SECONDS
    disable_nagle_algorithm = True
    server: ShapeServer

    @property
    def state(self) -> ShapeState:
        return self.server.state

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if self._body() is None:
            return
        if self.state.shape == "items" and path.startswith(ITEMS_PATH):
            self._api([unquote(path[len(ITEMS_PATH) :])])
        elif path == "/_stats":
            self._json(200, self.state.stats.snapshot(with_ids=False))
        elif path == "/_faults":
            self._json(200, self.state.knobs.as_dict())
        elif path == "/healthz":
            self._json(200, {"ok": True, "shape": self.state.shape})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        body = self._body()
        if body is None:
            return
        if self.state.shape == "lookup" and path == LOOKUP_PATH:
            try:
                request = json.loads(body or b"null")
            except ValueError:
                request = None
            skus = request.get("skus") if isinstance(request, dict) else None
            if not isinstance(skus, list) or not all(isinstance(s, str) for s in skus):
                self._count_refusal(400)
                self._json(400, {"error": 'body must be {"skus": [string, ...]}'})
                return
            self._api(skus)
        elif path == "/_stats/reset":
            self.state.stats.reset()
            self._json(200, {"ok": True})
        elif path in ("/_faults", "/_faults/reset"):
            try:
                changes = json.loads(body or b"{}") if path == "/_faults" else None
                if changes is not None and not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object of knob: value")
                knobs = Knobs() if changes is None else self.state.knobs.updated(changes)
            except ValueError as exc:
                self._json(400, {"error": str(exc)})
                return
            self._json(200, self.state.set_knobs(knobs).as_dict())
        else:
            self._json(404, {"error": "not found"})

    def _count_refusal(self, status: int) -> None:
        self.state.stats.arrive()
        self.state.stats.depart(status, 0)

    def _api(self, ids: list[str]) -> None:
        stats = self.state.stats
        stats.arrive()
        status, payload, headers, served = self._serve(ids)
        stats.depart(status, served)
        self._json(status, payload, headers)

    def _serve(self, ids: list[str]) -> tuple[int, Any, dict[str, str], int]:
        state = self.state
        if state.token and not hmac.compare_digest(
            (self.headers.get("Authorization") or "").encode(), f"Bearer {state.token}".encode()
        ):
            return 401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"}, 0
        if not ids or len(ids) > MAX_SKUS:
            return 400, {"error": f"1..{MAX_SKUS} ids per request, got {len(ids)}"}, {}, 0
        if any(not i or len(i) > MAX_ID_CHARS for i in ids):
            return 400, {"error": "empty or oversize id"}, {}, 0
        state.stats.asked(ids)
        wait = state.bucket.take()
        if wait > 0:
            return 429, {"error": "rate limited"}, {"Retry-After": str(max(1, -int(-wait // 1)))}, 0
        if state.fail_now():
            return 503, {"error": "injected failure"}, {}, 0
        knobs = state.knobs
        if any(i in knobs.refuse for i in ids):
            return knobs.refuse_status, {"error": "refused by policy"}, {}, 0
        found = {i: data.item_for(i, knobs.seed, knobs.missing_rate) for i in ids}
        if state.shape == "items":
            item = found[ids[0]]
            if item is None:
                return 404, {"error": "unknown id"}, {}, 0
            return 200, item, {}, 1
        rows = [_as_lookup_row(item) for item in found.values() if item is not None]
        return 200, {"data": rows}, {}, len(ids)

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return None
        return self.rfile.read(length) if length else b""

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


def _as_lookup_row(item: dict[str, Any]) -> dict[str, Any]:
    """A catalog item as the lookup API names it: its id under `sku`."""
    row = {k: v for k, v in item.items() if k != "id"}
    return {"sku": item["id"], **row}


class ShapeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: ShapeState) -> None:
        self.state = state
        super().__init__(address, ShapeHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def make_server(host: str, port: int, shape: str, token: str | None = None) -> ShapeServer:
    """A bound, not yet serving, stand-in of `shape` (one of SHAPES)."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}")
    return ShapeServer((host, port), ShapeState(shape, token or None))


def start_shape(
    shape: str, *, log_dir: Path, port: int | None = None, token: str | None = None
) -> ManagedProcess:
    """Start `python -m catalog_service.shapes` on loopback; its `.url` is the API's."""
    from orchestrator.stack import LOOPBACK, free_port, spawn, wait_for_port

    port = port or free_port()
    argv = [sys.executable, "-m", "catalog_service.shapes", "--shape", shape]
    argv += ["--host", LOOPBACK, "--port", str(port)]
    env = {"SHAPES_TOKEN": token} if token else {}
    proc = spawn(f"shapes-{shape}", argv, log_dir / f"shapes-{shape}-{port}.log", env=env)
    wait_for_port(proc, port)
    proc.url = f"http://{LOOPBACK}:{port}"
    return proc


def main(argv: Sequence[str] | None = None) -> None:
    """Run one stand-in until SIGTERM or Ctrl-C."""
    import os

    parser = argparse.ArgumentParser(prog="python -m catalog_service.shapes")
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    # The token comes from the environment only: a command line is visible to every user.
    server = make_server(args.host, args.port, args.shape, os.environ.get("SHAPES_TOKEN"))
    print(f"{args.shape} stand-in listening on {server.url}", file=sys.stderr)
    serve_until_signal(server)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
