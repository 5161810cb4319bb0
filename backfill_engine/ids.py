"""How an `_id` travels as a string, and which other `_id`s would travel as the same one.

A source keyed by strings (an HTTP API) cannot tell `5` from `"5"`, nor an ObjectId from
its hex string: both would get the same answer, so two different documents would
receive one document's data. Such ids are ambiguous within a job and are quarantined,
never written (`string_twins` finds them; the planner asks the collection for them).
"""

from __future__ import annotations

import re
from typing import Any

from bson import ObjectId

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_OBJECT_ID_HEX = re.compile(r"[0-9a-f]{24}")


def id_string(value: Any) -> str:
    """The string form an `_id` travels as: ObjectId hex, int in decimal, str as is."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def string_twins(value: Any) -> list[Any]:
    """Every `_id` of another BSON type whose `id_string` equals that of `value`."""
    if isinstance(value, bool):
        return []
    if isinstance(value, ObjectId | int | float):
        return [id_string(value)]
    if not isinstance(value, str):
        return []
    twins: list[Any] = []
    if _OBJECT_ID_HEX.fullmatch(value):
        twins.append(ObjectId(value))
    if _CANONICAL_INT.fullmatch(value) and INT64_MIN <= int(value) <= INT64_MAX:
        twins.append(int(value))  # matches an int32, an int64 and an equal double alike
    try:
        as_float = float(value)
    except ValueError:
        pass
    else:
        if str(as_float) == value:
            twins.append(as_float)
    return twins
