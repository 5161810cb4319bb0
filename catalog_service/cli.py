"""`backfill catalog-server` / `python -m catalog_service`: run the catalog stand-in."""

from __future__ import annotations

import logging

import click

from catalog_service.faults import (
    DEFAULT_REFUSE_STATUS,
    DEFAULT_STALL_MS,
    DEFAULT_TRICKLE_SECONDS,
    FaultConfigError,
    Faults,
)
from catalog_service.limiters import DEFAULT_SCHEME, SCHEMES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700

_rate = click.FloatRange(0.0, 1.0)


@click.command("catalog-server")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option("--latency-ms", default=0.0, type=float, help="Sleep before each API answer.")
@click.option("--error-rate", default=0.0, type=_rate, help="Share of requests answered 5xx.")
@click.option(
    "--rate-limit", default=0.0, type=float, help="Requests/s before 429 + Retry-After; 0 = off."
)
@click.option(
    "--rate-limit-scheme",
    default=DEFAULT_SCHEME,
    show_default=True,
    type=click.Choice(SCHEMES),
    help="How --rate-limit counts: a token bucket, a fixed or a sliding one-second window.",
)
@click.option("--missing-rate", default=0.0, type=_rate, help="Share of ids the catalog lacks.")
@click.option(
    "--malformed-rate", default=0.0, type=_rate, help="Share of 200s with a broken JSON body."
)
@click.option(
    "--hostile-rate", default=0.0, type=_rate, help="Share of ids answered with hostile payloads."
)
@click.option(
    "--timeout-rate", default=0.0, type=_rate, help="Share of requests that stall --stall-ms."
)
@click.option("--stall-ms", default=DEFAULT_STALL_MS, show_default=True, type=float)
@click.option(
    "--trickle-rate",
    default=0.0,
    type=_rate,
    help="Share of answers whose body trickles a few bytes at a time over --trickle-seconds.",
)
@click.option(
    "--trickle-head-rate",
    default=0.0,
    type=_rate,
    help="Share of answers whose status line and headers trickle over --trickle-seconds.",
)
@click.option("--trickle-seconds", default=DEFAULT_TRICKLE_SECONDS, show_default=True, type=float)
@click.option(
    "--refuse-rate",
    default=0.0,
    type=_rate,
    help="Share of ids whose presence makes a whole request answer --refuse-status.",
)
@click.option(
    "--refuse-status",
    default=DEFAULT_REFUSE_STATUS,
    show_default=True,
    type=click.IntRange(400, 499),
    help="The status of a refused request (403, 404, 414, ...).",
)
@click.option(
    "--poison-rate",
    default=0.0,
    type=_rate,
    help="Share of ids whose presence makes a whole request answer an unparsable body.",
)
@click.option("--huge-chars", default=None, type=int, help="Size of the huge hostile string.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of data and faults.")
@click.option(
    "--token",
    envvar="CATALOG_TOKEN",
    default=None,
    show_envvar=True,
    help="Require `Authorization: Bearer TOKEN` (prefer the environment variable).",
)
@click.option("--log-level", default="WARNING", show_default=True)
def catalog_server(
    host: str,
    port: int,
    latency_ms: float,
    error_rate: float,
    rate_limit: float,
    rate_limit_scheme: str,
    missing_rate: float,
    malformed_rate: float,
    hostile_rate: float,
    timeout_rate: float,
    stall_ms: float,
    trickle_rate: float,
    trickle_head_rate: float,
    trickle_seconds: float,
    refuse_rate: float,
    refuse_status: int,
    poison_rate: float,
    huge_chars: int | None,
    seed: int,
    token: str | None,
    log_level: str,
) -> None:
    """Run the local stand-in for the external catalog API until SIGTERM or Ctrl-C."""
    from catalog_service.server import make_server, serve_until_signal

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    knobs = {
        "latency_ms": latency_ms,
        "error_rate": error_rate,
        "rate_limit": rate_limit,
        "rate_limit_scheme": rate_limit_scheme,
        "missing_rate": missing_rate,
        "malformed_rate": malformed_rate,
        "hostile_rate": hostile_rate,
        "timeout_rate": timeout_rate,
        "stall_ms": stall_ms,
        "trickle_rate": trickle_rate,
        "trickle_head_rate": trickle_head_rate,
        "trickle_seconds": trickle_seconds,
        "refuse_rate": refuse_rate,
        "refuse_status": refuse_status,
        "poison_rate": poison_rate,
        "seed": seed,
    }
    if huge_chars is not None:
        knobs["huge_chars"] = huge_chars
    try:
        faults = Faults().updated(knobs)
    except FaultConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        server = make_server(host, port, faults, token)
    except OSError as exc:
        raise click.ClickException(
            f"catalog stand-in cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    auth = "token required" if token else "no auth"
    click.echo(f"catalog stand-in listening on {server.url} ({auth})", err=True)
    serve_until_signal(server)


def add_catalog_server_command(group: click.Group) -> None:
    """Mount `catalog-server` on the main `backfill` CLI group."""
    group.add_command(catalog_server, name="catalog-server")
