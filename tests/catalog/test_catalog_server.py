"""The catalog stand-in, spoken to over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from click.testing import CliRunner

from backfill_engine.payload import InvalidPayloadError
from catalog_service.cli import catalog_server
from catalog_service.data import (
    HOSTILE_KINDS,
    expected_fields,
    expected_item,
    gtin13,
    hostile_kind,
    is_missing,
)
from catalog_service.scenario import start_catalog
from tests.catalog.standin import StandIn, launch
from tests.catalog_definition import validate_item


def ids_param(ids: list[str]) -> str:
    return ",".join(quote(i, safe="") for i in ids)


def test_items_are_derived_from_the_id_and_stable(catalog: StandIn) -> None:
    ids = ["65f0c0ffee0000000000abcd", "42", "sku-7"]
    first = catalog.get(f"/v1/products?ids={ids_param(ids)}").json()
    again = catalog.get(f"/v1/products?ids={ids_param(ids)}").json()
    assert first == again
    assert first == {"items": [expected_item(i) for i in ids], "missing": []}


def test_expected_items_pass_validation() -> None:
    for i in range(200):
        item = expected_item(str(i), seed=3)
        assert validate_item(item) == expected_fields(str(i), seed=3)
        assert item["gtin"] == gtin13(item["gtin"][:12])


def test_seed_changes_the_data() -> None:
    assert [expected_item(str(i), 1) for i in range(20)] != [
        expected_item(str(i), 2) for i in range(20)
    ]


def test_single_item_endpoint(catalog: StandIn) -> None:
    resp = catalog.get("/v1/products/abc")
    assert resp.status_code == 200
    assert resp.json() == expected_item("abc")


def test_unknown_single_id_is_404(catalog: StandIn) -> None:
    catalog.faults(missing_rate=1.0)
    assert catalog.get("/v1/products/abc").status_code == 404


def test_at_most_100_ids_per_request(catalog: StandIn) -> None:
    ids = [str(i) for i in range(101)]
    assert catalog.get(f"/v1/products?ids={ids_param(ids[:100])}").status_code == 200
    resp = catalog.get(f"/v1/products?ids={ids_param(ids)}")
    assert resp.status_code == 400
    assert "100" in resp.json()["error"]


@pytest.mark.parametrize("query", ["", "?ids=", "?ids=a,,b", "?ids=" + "x" * 129, "?other=1"])
def test_out_of_contract_id_lists_are_400(catalog: StandIn, query: str) -> None:
    assert catalog.get(f"/v1/products{query}").status_code == 400


def test_ids_with_commas_and_slashes_travel_percent_encoded(catalog: StandIn) -> None:
    ids = ["a,b", "c/d", "ünï cödé", "50%"]
    body = catalog.get(f"/v1/products?ids={ids_param(ids)}").json()
    assert [item["id"] for item in body["items"]] == ids
    assert catalog.get("/v1/products/" + quote("c/d", safe="")).json()["id"] == "c/d"


def test_missing_ids_are_decided_by_the_id(catalog: StandIn) -> None:
    catalog.faults(missing_rate=0.3, seed=7)
    ids = [f"p{i}" for i in range(100)]
    body = catalog.get(f"/v1/products?ids={ids_param(ids)}").json()
    expected_missing = [i for i in ids if is_missing(i, 7, 0.3)]
    assert body["missing"] == expected_missing
    assert [it["id"] for it in body["items"]] == [i for i in ids if i not in expected_missing]
    assert 10 <= len(expected_missing) <= 50


def test_hostile_items_cover_every_kind_and_never_validate(catalog: StandIn) -> None:
    catalog.faults(hostile_rate=1.0)
    ids = [f"h{i}" for i in range(100)]
    body = catalog.get(f"/v1/products?ids={ids_param(ids)}").json()
    assert body["missing"] == []
    assert {hostile_kind(i) for i in ids} == set(HOSTILE_KINDS)
    attributed = [it for it in body["items"] if "id" in it]
    # "no_id" entries carry valid fields but cannot be attributed: the client reports them.
    assert [it["id"] for it in attributed] == [i for i in ids if hostile_kind(i) != "no_id"]
    assert len(body["items"]) == len(ids)
    for item in attributed:
        with pytest.raises(InvalidPayloadError):
            validate_item(item)


def test_token_is_required_when_set(secured_catalog: StandIn) -> None:
    no_token = requests.get(f"{secured_catalog.url}/v1/products?ids=a", timeout=5)
    assert no_token.status_code == 401
    assert no_token.headers["WWW-Authenticate"] == "Bearer"
    assert secured_catalog.get("/v1/products?ids=a", token="wrong").status_code == 401
    assert secured_catalog.get("/v1/products?ids=a").status_code == 200
    assert secured_catalog.stats()["by_status"] == {"200": 1, "401": 2}


def test_over_its_rate_it_answers_429_with_retry_after(catalog: StandIn) -> None:
    catalog.faults(rate_limit=2)  # burst of 2, then one token per 0.5 s
    answers = [catalog.get("/v1/products?ids=a") for _ in range(6)]
    throttled = [r for r in answers if r.status_code == 429]
    assert throttled, [r.status_code for r in answers]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in throttled)


def test_throttle_next_is_a_deterministic_429(catalog: StandIn) -> None:
    catalog.faults(throttle_next=1, retry_after=3)
    first, second = catalog.get("/v1/products?ids=a"), catalog.get("/v1/products?ids=a")
    assert (first.status_code, first.headers["Retry-After"]) == (429, "3")
    assert second.status_code == 200


def test_error_rate_one_answers_5xx(catalog: StandIn) -> None:
    catalog.faults(error_rate=1.0)
    statuses = {catalog.get("/v1/products?ids=a").status_code for _ in range(10)}
    assert statuses <= {500, 502, 503}


def test_fail_next_counts_down(catalog: StandIn) -> None:
    catalog.faults(fail_next=2)
    assert [catalog.get("/v1/products?ids=a").status_code for _ in range(3)] == [503, 503, 200]


def test_malformed_rate_one_breaks_every_body(catalog: StandIn) -> None:
    catalog.faults(malformed_rate=1.0)
    for _ in range(10):
        resp = catalog.get("/v1/products?ids=a,b")
        assert resp.status_code == 200
        try:
            body = json.loads(resp.content)
        except ValueError:
            continue
        assert not isinstance(body.get("items"), list)


def test_stats_count_requests_statuses_and_ids(catalog: StandIn) -> None:
    catalog.get("/v1/products?ids=a,b,c")
    catalog.get("/v1/products?ids=a")
    catalog.get("/v1/products/b")
    catalog.get("/v1/products?ids=" + "x," * 100)  # refused, counts no ids
    stats = catalog.stats()
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 3, "400": 1}
    assert stats["ids_served"] == 5
    assert stats["ids_requested"] == 5
    assert stats["id_counts"] == {"a": 2, "b": 2, "c": 1}
    assert catalog.stats(ids=["a", "zzz"])["id_counts"] == {"a": 2, "zzz": 0}
    assert 1 <= stats["max_rate_1s"] <= 4
    requests.post(f"{catalog.url}/_stats/reset", timeout=5).raise_for_status()
    cleared = catalog.stats()
    assert (cleared["requests"], cleared["id_counts"], cleared["by_status"]) == (0, {}, {})


def test_control_endpoints_are_not_counted(catalog: StandIn) -> None:
    for _ in range(3):
        catalog.stats()
        requests.get(f"{catalog.url}/_faults", timeout=5)
    assert catalog.stats()["requests"] == 0


def test_max_rate_1s_counts_requests_inside_one_second(catalog: StandIn) -> None:
    start = time.monotonic()
    for _ in range(5):
        catalog.get("/v1/products?ids=a")
    elapsed = time.monotonic() - start
    observed = catalog.stats()["max_rate_1s"]
    assert 1 <= observed <= 5
    if elapsed < 1.0:  # all five arrived inside one second, so one window holds them all
        assert observed == 5


def test_requests_are_served_concurrently(catalog: StandIn) -> None:
    catalog.faults(latency_ms=300)
    threads = [
        threading.Thread(target=catalog.get, args=(f"/v1/products?ids={i}",)) for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = catalog.stats()
    assert stats["by_status"] == {"200": 6}
    assert stats["max_in_flight"] >= 2


@pytest.mark.parametrize(
    "knobs",
    [{"error_rate": 2}, {"latency_ms": -1}, {"bogus": 1}, {"fail_next": 1.5}, {"seed": "x"}],
)
def test_bad_knobs_are_refused(catalog: StandIn, knobs: dict[str, object]) -> None:
    resp = requests.post(f"{catalog.url}/_faults", json=knobs, timeout=5)
    assert resp.status_code == 400
    assert next(iter(knobs)) in resp.json()["error"]


def test_unknown_path_is_404(catalog: StandIn) -> None:
    assert catalog.get("/v2/things").status_code == 404


def test_connections_are_kept_alive(catalog: StandIn) -> None:
    with requests.Session() as session:
        for _ in range(3):
            resp = session.get(f"{catalog.url}/v1/products?ids=a", timeout=5)
            assert resp.headers.get("Connection", "").lower() != "close"
            assert resp.status_code == 200


def test_sigterm_stops_it_cleanly(tmp_path: Path) -> None:
    standin = launch(tmp_path)
    assert standin.get("/healthz").status_code == 200
    standin.proc.stop()
    assert standin.proc.popen.returncode == 0


def test_cli_refuses_an_out_of_range_knob() -> None:
    result = CliRunner().invoke(catalog_server, ["--error-rate", "2"])
    assert result.exit_code == 2
    assert "--error-rate" in result.output


def test_a_trickled_answer_arrives_in_pieces_and_whole(catalog: StandIn) -> None:
    catalog.faults(trickle_rate=1.0, trickle_seconds=1.0)
    with catalog.get("/v1/products?ids=a,b", stream=True) as resp:
        pieces = []
        while piece := resp.raw.read1(64 * 1024):
            pieces.append(piece)
    assert len(pieces) > 1, "the body came in one piece"
    assert json.loads(b"".join(pieces)) == {
        "items": [expected_item("a"), expected_item("b")],
        "missing": [],
    }


def test_trickle_knobs_come_from_the_command_line(tmp_path: Path) -> None:
    proc = start_catalog(
        log_dir=tmp_path, extra_args=["--trickle-rate", "0.25", "--trickle-seconds", "7"]
    )
    try:
        knobs = requests.get(f"{proc.url}/_faults", timeout=10).json()
    finally:
        proc.stop()
    assert (knobs["trickle_rate"], knobs["trickle_seconds"]) == (0.25, 7.0)


def test_cli_refuses_an_out_of_range_trickle_rate() -> None:
    result = CliRunner().invoke(catalog_server, ["--trickle-rate", "1.5"])
    assert result.exit_code == 2
    assert "'--trickle-rate': 1.5 is not in the range" in result.output
