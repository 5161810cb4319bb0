"""HttpSource shapes and the client a custom source gets, against real stand-ins.

The lookup API (`POST /lookup {"skus": [...]}` -> `{"data": [{"sku": ...}]}`, unknown skus
left out) and the items API (`GET /items/{id}`, 404 for an unknown id) serve the
catalog's data, so `expected_item` says what each id gets.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from bson import ObjectId

from backfill_engine import (
    HttpRequest,
    HttpSource,
    Item,
    Items,
    PerPath,
    PostJson,
    Query,
    SourceRefused,
    SourceResult,
)
from backfill_engine.http_client import HttpSourceClient, SourceAuthError, SourceProtocolError
from backfill_engine.sources import MAX_IDS_PER_REQUEST, Shape
from catalog_service.data import expected_item, is_missing
from catalog_service.shapes import MAX_SKUS
from tests.catalog.standin import StandIn
from tests.catalog_definition import CATALOG_PATH
from tests.sources.conftest import ShapeApi

MISSING_RATE = 0.2

LOOKUP = HttpSource(
    url_env="LOOKUP_URL",
    path="/lookup",
    ask=PostJson(key="skus", ids_per_request=MAX_SKUS),
    answer=Items(at="data", id_field="sku", missing=None),
)
ITEMS = HttpSource(url_env="ITEMS_URL", path="/items/{id}", ask=PerPath())


class Counter:
    """The rate limiter's acquire, counted: every request must take a token."""

    def __init__(self) -> None:
        self.before = 0

    def __call__(self) -> None:
        self.before += 1


def client(url: str, counter: Counter | None = None, **kwargs: Any) -> HttpSourceClient:
    options: dict[str, Any] = {
        "max_retries": 2,
        "backoff_seconds": 0.0,
        "read_timeout": 5.0,
        "sleep": lambda s: None,
        "before_request": counter,
        **kwargs,
    }
    return HttpSourceClient(url, **options)


def without(item: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != key}


def skus(n: int, prefix: str = "sku") -> list[str]:
    return [f"{prefix}-{k}" for k in range(n)]


# --- shapes as data: what each asks ----------------------------------------------------


def test_query_shape_names_its_parameter_and_separator() -> None:
    req = Query(param="sku", separator="|").request("/v2/find?fields=all", ["a b", "c|d", "e"])
    assert (req.method, req.path) == ("GET", "/v2/find?fields=all&sku=a%20b|c%7Cd|e")
    assert req.name == "/v2/find"


def test_post_and_per_path_shapes() -> None:
    assert PostJson(key="skus").request("/lookup", ["a", "b"]).json == {"skus": ["a", "b"]}
    one = PerPath().request("/items/{id}", ["a/b"])
    assert (one.path, one.name) == ("/items/a%2Fb", "/items/{id}")  # the log names no id


def test_definition_errors_name_the_source() -> None:
    from backfill_engine import BackfillError

    with pytest.raises(BackfillError, match="needs \\{id\\} in its path"):
        HttpSource(url_env="X_URL", path="/items", ask=PerPath())
    with pytest.raises(BackfillError, match="ids_per_request"):
        HttpSource(url_env="X_URL", ask=Query(ids_per_request=MAX_IDS_PER_REQUEST + 1))


def test_readers_of_each_answer_shape() -> None:
    listed = Items().read(
        {"items": [{"id": "a"}, {"id": 7}, {"x": 1}], "missing": ["b"]}, ["a", "b", "7", "c"]
    )
    assert set(listed.items) == {"a", "7"} and listed.missing == ["b"]
    assert "c" not in listed.missing  # neither answered nor listed: the client reports it
    omitted = Items(at="result.rows", id_field="sku", missing=None).read(
        {"result": {"rows": [{"sku": "a"}, {"sku": "a"}]}}, ["a", "b"]
    )
    assert omitted.missing == ["b"] and "twice" in omitted.errors["a"]
    assert Item(at="data").read({"data": {"v": 1}}, ["a"]).items == {"a": {"v": 1}}
    assert "another id" in Item(id_field="id").read({"id": "b"}, ["a"]).errors["a"]
    with pytest.raises(ValueError, match="data list"):
        Items(at="data").read({"items": []}, ["a"])


# --- POST lookup -----------------------------------------------------------------------


def test_post_lookup_answers_map_back_and_omitted_ids_are_missing(lookup_api: ShapeApi) -> None:
    lookup_api.faults(missing_rate=MISSING_RATE)
    oid = ObjectId("65f0c0ffee0000000000abcd")
    ids: list[Any] = [oid, 42, *skus(118)]
    counter = Counter()
    with client(lookup_api.url, counter) as c:
        result = c.fetch(ids, shape=LOOKUP.shape)
    unknown = [i for i in ids if is_missing(str(i), 0, MISSING_RATE)]
    assert unknown and sorted(map(str, result.missing)) == sorted(map(str, unknown))
    assert result.errors == {}
    for original in ids:
        if original not in unknown:
            assert result.items[original] == {
                "sku": str(original),
                **without(expected_item(str(original)), "id"),
            }
    requests = math.ceil(len(ids) / MAX_SKUS)
    assert result.requests == counter.before == lookup_api.stats()["requests"] == requests


def test_post_lookup_splits_around_a_refused_sku(lookup_api: ShapeApi) -> None:
    ids = skus(MAX_SKUS)
    lookup_api.faults(refuse=[ids[17]], refuse_status=400)
    counter = Counter()
    with client(lookup_api.url, counter) as c:
        result = c.fetch(ids, shape=LOOKUP.shape)
    assert result.errors == {ids[17]: "the API refused this id even alone: HTTP 400"}
    assert set(result.items) == set(ids) - {ids[17]}
    # The whole request, then two per halving level for the one refused id.
    assert (
        lookup_api.stats()["requests"] == counter.before <= 1 + 2 * math.ceil(math.log2(MAX_SKUS))
    )


def test_post_lookup_refused_for_every_sku_with_403_is_our_credentials(
    lookup_api: ShapeApi,
) -> None:
    ids = skus(4)
    lookup_api.faults(refuse=ids, refuse_status=403)
    with client(lookup_api.url) as c, pytest.raises(SourceAuthError, match="/lookup"):
        c.fetch(ids, shape=LOOKUP.shape)


def test_hooks_fit_an_api_no_shape_describes(lookup_api: ShapeApi) -> None:
    """`request` and `read`: the two functions a team writes for an unusual API."""

    def ask(ids: list[str]) -> HttpRequest:
        return HttpRequest("POST", "/lookup", json={"skus": [i.upper() for i in ids]})

    def read(body: Any, ids: list[str]) -> SourceResult:
        rows = {row["sku"].lower(): {"brand": row["brand"]} for row in body["data"]}
        return SourceResult(items={i: rows[i] for i in ids if i in rows})

    source = HttpSource(
        url_env="LOOKUP_URL", ask=PostJson(ids_per_request=3), request=ask, read=read
    )
    with client(lookup_api.url) as c:
        result = c.fetch(["a", "b", "c", "d"], shape=source.shape)
    assert result.items["d"] == {"brand": expected_item("D")["brand"]}
    assert lookup_api.stats()["requests"] == 2
    # A read hook that cannot make sense of a body is a garbled answer, never a crash.
    broken = HttpSource(url_env="LOOKUP_URL", request=ask, read=lambda body, ids: body["nope"])
    with client(lookup_api.url) as c, pytest.raises(SourceProtocolError, match="nope"):
        c.fetch(["a"], shape=broken.shape)


# --- one id per path -------------------------------------------------------------------


def test_per_path_404_is_missing_and_a_refused_id_is_its_own_error(items_api: ShapeApi) -> None:
    ids = skus(12)
    unknown = [i for i in ids if is_missing(i, 0, 0.3)]
    items_api.faults(missing_rate=0.3, refuse=[ids[5]], refuse_status=403)
    counter = Counter()
    with client(items_api.url, counter) as c:
        result = c.fetch(ids, shape=ITEMS.shape)
    assert unknown and sorted(result.missing) == sorted(unknown)
    assert result.errors == {ids[5]: "the API refused this id even alone: HTTP 403"}
    for i in set(ids) - set(unknown) - {ids[5]}:
        assert result.items[i] == expected_item(i)
    assert items_api.stats()["requests"] == counter.before == len(ids)  # one each, no retry


def test_per_path_retries_a_503_and_keeps_the_id(items_api: ShapeApi) -> None:
    items_api.faults(fail_next=1)
    with client(items_api.url) as c:
        result = c.fetch(["a", "b"], shape=ITEMS.shape)
    assert set(result.items) == {"a", "b"}
    assert items_api.stats()["by_status"] == {"200": 2, "503": 1}


# --- what a custom source calls ----------------------------------------------------------


def test_a_custom_call_is_retried_rate_limited_and_counted(items_api: ShapeApi) -> None:
    items_api.faults(fail_next=1)
    counter = Counter()
    stats: dict[str, float] = {}
    with client(items_api.url, counter) as c:
        http = c.bound(None, stats)
        answer = http.get("/items/a", route="/items/{id}")
        assert (answer.status, answer.body) == (200, expected_item("a"))
        items_api.faults(missing_rate=1.0)
        assert http.get("/items/b").status == 404
        items_api.faults(refuse=["c"], refuse_status=403)
        with pytest.raises(SourceRefused, match=r"/items/\{id\} refused the request: HTTP 403"):
            http.get("/items/c", route="/items/{id}")
    assert counter.before == stats["requests"] == 4 and stats["http_5xx"] == 1


def test_a_custom_post_reads_json(lookup_api: ShapeApi) -> None:
    with client(lookup_api.url) as c:
        answer = c.bound(None, None).post("/lookup", {"skus": ["z"]})
    assert answer.body["data"][0]["sku"] == "z"


# --- the catalog's own shape is still the default ------------------------------------


def test_the_default_shape_is_the_catalog_contract(catalog: StandIn) -> None:
    assert Shape(CATALOG_PATH) == HttpSource(url_env="CATALOG_URL", path=CATALOG_PATH).shape
    with client(catalog.url, path=CATALOG_PATH) as c:
        assert c.fetch(["a"]).items == {"a": expected_item("a")}
