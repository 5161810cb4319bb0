"""A ratings API stand-in with no batch endpoint: the README's custom-source example calls it.

`python -m catalog_service.ratings --port N` (bearer token from SHAPES_TOKEN) runs one:

  GET /v1/rating/SKU  -> 200 {"stars": 0..5} (`stars_for(SKU)`), or 404 for an unknown sku

It is a `catalog_service.shapes` stand-in with another route: the same bearer check,
control endpoints (/_stats, /_faults with missing_rate, fail_next, rate_limit, ...) and
the same unknown ids (`catalog_service.data.is_missing`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from catalog_service.server import serve_until_signal
from catalog_service.shapes import ShapeHandler, ShapeServer, ShapeState

if TYPE_CHECKING:
    from orchestrator.stack import ManagedProcess

log = logging.getLogger(__name__)

RATING_PATH = "/v1/rating/"
MAX_STARS = 5


def stars_for(sku: str, seed: int = 0) -> int:
    """The rating the stand-in gives a known `sku`: fixed by the sku and the seed."""
    digest = hashlib.sha256(f"stars|{seed}|{sku}".encode()).digest()
    return digest[0] % (MAX_STARS + 1)


class RatingsHandler(ShapeHandler):
    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if not path.startswith(RATING_PATH):
            super().do_GET()
        elif self._body() is not None:
            self._api([unquote(path[len(RATING_PATH) :])])

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        if path.startswith("/_"):  # only the control endpoints answer a POST
            super().do_POST()
        else:
            self._json(404, {"error": "not found"})

    def _serve(self, ids: list[str]) -> tuple[int, Any, dict[str, str], int]:
        # The shapes checks (token, rate, injected faults) answer first; a known sku's
        # lookup row becomes its rating.
        status, payload, headers, served = super()._serve(ids)
        if status != 200:
            return status, payload, headers, served
        if not payload["data"]:
            return 404, {"error": "unknown sku"}, {}, 0
        return 200, {"stars": stars_for(ids[0], self.state.knobs.seed)}, {}, 1


class RatingsServer(ShapeServer):
    def __init__(self, address: tuple[str, int], state: ShapeState) -> None:
        self.state = state
        ThreadingHTTPServer.__init__(self, address, RatingsHandler)


def make_server(host: str, port: int, token: str | None = None) -> RatingsServer:
    """A bound, not yet serving, ratings stand-in."""
    return RatingsServer((host, port), ShapeState("ratings", token or None))


def start_ratings(
    *, log_dir: Path, port: int | None = None, token: str | None = None
) -> ManagedProcess:
    """Start `python -m catalog_service.ratings` on loopback; its `.url` is the API's."""
    from orchestrator.stack import LOOPBACK, free_port, spawn, wait_for_port

    port = port or free_port()
    argv = [sys.executable, "-m", "catalog_service.ratings"]
    argv += ["--host", LOOPBACK, "--port", str(port)]
    env = {"SHAPES_TOKEN": token} if token else {}
    proc = spawn("ratings", argv, log_dir / f"ratings-{port}.log", env=env)
    wait_for_port(proc, port)
    proc.url = f"http://{LOOPBACK}:{port}"
    return proc


def main(argv: Sequence[str] | None = None) -> None:
    """Run the stand-in until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m catalog_service.ratings")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    # The token comes from the environment only: a command line is visible to every user.
    server = make_server(args.host, args.port, os.environ.get("SHAPES_TOKEN"))
    print(f"ratings stand-in listening on {server.url}", file=sys.stderr)
    serve_until_signal(server)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
