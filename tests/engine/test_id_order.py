"""The planner's resume cursor over every BSON `_id` type, without a server.

`_id`s sort by BSON type first (MongoDB's comparison order), then by value; resuming after
a cursor must take the later values of its own type and every type that sorts after it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.dbref import DBRef

from backfill_engine.planner import UnsupportedIdError, _type_rank, after_cursor, check_ids

# One value per group of MongoDB's BSON comparison order, lowest first.
IN_BSON_ORDER: list[list[Any]] = [
    [MinKey()],
    [None],
    [-3, 1.5, Int64(7), Decimal128("2.25")],
    ["a"],
    [{"k": 1}, DBRef("c", 1)],
    [[1, 2]],
    [b"x", Binary(b"y", 4)],
    [ObjectId("65f0a0000000000000000001")],
    [False, True],
    [dt.datetime(2024, 1, 1)],
    [Timestamp(5, 1)],
    [Regex("^a"), re.compile("^b")],
    [Code("f()")],
    [MaxKey()],
]

# What a batch carries: the worker keys documents and answers by `_id`.
CARRIED: list[Any] = [
    MinKey(),
    None,
    -3,
    1.5,
    Int64(7),
    "a",
    b"x",
    Binary(b"y", 4),
    ObjectId("65f0a0000000000000000002"),
    True,
    dt.datetime(2024, 1, 1),
    Timestamp(5, 1),
    MaxKey(),
]
REFUSED: list[tuple[Any, str]] = [
    ({"k": 1}, "embedded document"),
    ([1, 2], "array"),
    (Decimal128("2.25"), "Decimal128"),
    (float("nan"), "NaN"),
    (Regex("^a"), "regex"),
    (re.compile("^a"), "regex"),
    (Code("f()"), "javascript"),
]


def test_type_ranks_follow_the_bson_comparison_order() -> None:
    ranks = [{_type_rank(v) for v in group} for group in IN_BSON_ORDER]
    assert all(len(r) == 1 for r in ranks), ranks  # one rank per group
    flat = [r.pop() for r in ranks]
    assert flat == sorted(flat) and len(set(flat)) == len(flat), flat


def _type_clause(query: dict[str, Any]) -> list[str]:
    clauses = query.get("$or", [query])
    for clause in clauses:
        spec = clause.get("_id")
        if isinstance(spec, dict) and "$type" in spec:
            return list(spec["$type"])
    return []


@pytest.mark.parametrize("cursor", CARRIED, ids=repr)
def test_resume_takes_every_type_that_sorts_after_the_cursor(cursor: Any) -> None:
    rank = _type_rank(cursor)
    later = _type_clause(after_cursor(cursor))
    expected = {"minKey": 0, "null": 1, "timestamp": 10, "regex": 11, "maxKey": 13}
    for alias, alias_rank in expected.items():
        assert (alias in later) == (alias_rank > rank), (cursor, later)
    if rank < 2:
        assert {"int", "long", "double", "decimal"} <= set(later)


@pytest.mark.parametrize("cursor", [MinKey(), None, MaxKey()], ids=repr)
def test_a_cursor_of_a_one_value_type_asks_only_for_later_types(cursor: Any) -> None:
    # Only one such `_id` can exist; `$gt` MinKey would even match every other type.
    query = after_cursor(cursor)
    for clause in query.get("$or", [query]):
        assert "$gt" not in clause.get("_id", {}), query


def test_nothing_sorts_after_max_key() -> None:
    assert after_cursor(MaxKey()) == {"_id": {"$in": []}}


@pytest.mark.parametrize("value", CARRIED, ids=repr)
def test_a_batch_carries_every_hashable_scalar(value: Any) -> None:
    check_ids("job-1", [value])


@pytest.mark.parametrize(("value", "named"), REFUSED, ids=lambda v: repr(v)[:30])
def test_an_id_no_batch_can_carry_is_refused_naming_its_type(value: Any, named: str) -> None:
    with pytest.raises(UnsupportedIdError) as exc:
        check_ids("job-1", ["ok", value])
    message = str(exc.value)
    assert f"_id of type {named}" in message and "job-1" in message, message
    assert "\n" not in message
