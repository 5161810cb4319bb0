"""The stand-in's per-id refusals and trickled heads: a whole request fails for one id's sake."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from catalog_service.cli import catalog_server
from catalog_service.data import expected_item, is_poison, is_refused
from catalog_service.scenario import start_catalog
from tests.catalog.standin import StandIn

RATE = 0.05


def _one(hit: Callable[[str, int, float], bool], good: bool = False) -> str:
    """The first id the knob at RATE hits (or, with `good`, spares)."""
    return next(s for s in map(str, range(10_000)) if hit(s, 0, RATE) != good)


@pytest.mark.parametrize("status", [403, 404, 414])
def test_one_refused_id_refuses_the_whole_request(catalog: StandIn, status: int) -> None:
    catalog.faults(refuse_rate=RATE, refuse_status=status)
    bad, good = _one(is_refused), _one(is_refused, good=True)
    assert catalog.get(f"/v1/products?ids={good},{bad}").status_code == status
    assert catalog.get(f"/v1/products/{bad}").status_code == status
    assert catalog.get(f"/v1/products?ids={good}").json()["items"] == [expected_item(good)]
    assert catalog.stats()["by_status"] == {str(status): 2, "200": 1}


def test_one_poison_id_breaks_the_whole_body(catalog: StandIn) -> None:
    catalog.faults(poison_rate=RATE)
    bad, good = _one(is_poison), _one(is_poison, good=True)
    resp = catalog.get(f"/v1/products?ids={good},{bad}")
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        json.loads(resp.content)
    assert catalog.get(f"/v1/products?ids={good}").json()["items"] == [expected_item(good)]


def test_a_trickled_head_arrives_a_byte_at_a_time_and_whole(catalog: StandIn) -> None:
    catalog.faults(trickle_head_rate=1.0, trickle_seconds=0.5)
    host, port = catalog.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET /v1/products?ids=a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        receives = []
        while data := conn.recv(65536):
            receives.append(data)
    head, _, body = b"".join(receives).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(receives) > 10, "the head came in one piece"
    assert json.loads(body)["items"] == [expected_item("a")]


def test_refusal_knobs_come_from_the_command_line(tmp_path: Path) -> None:
    args = ["--refuse-rate", "0.1", "--refuse-status", "414", "--poison-rate", "0.2"]
    proc = start_catalog(log_dir=tmp_path, extra_args=[*args, "--trickle-head-rate", "0.3"])
    try:
        knobs = requests.get(f"{proc.url}/_faults", timeout=10).json()
    finally:
        proc.stop()
    assert knobs["refuse_rate"] == 0.1 and knobs["refuse_status"] == 414
    assert knobs["poison_rate"] == 0.2 and knobs["trickle_head_rate"] == 0.3


def test_a_refuse_status_outside_4xx_is_refused_in_one_line(catalog: StandIn) -> None:
    result = CliRunner().invoke(catalog_server, ["--refuse-status", "200"])
    assert result.exit_code == 2
    assert "'--refuse-status': 200 is not in the range" in result.output
    resp = requests.post(f"{catalog.url}/_faults", json={"refuse_status": 503}, timeout=10)
    assert resp.status_code == 400
    assert "refuse_status must be between 400 and 499" in resp.json()["error"]
