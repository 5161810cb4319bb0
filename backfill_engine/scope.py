"""Scoping a run: a read-only `--filter`, an `--ids-file`, a `--limit` (pure parsing), and
the one server check a filter needs (whether the server accepts it).

Careful teams run a small slice first, then the rest; these make the slice exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import pymongo.errors
from bson import ObjectId, json_util
from pymongo.collection import Collection

from backfill_engine.errors import BackfillError

# Query operators that only read. `$where`, `$function`, `$expr` (which can run `$function`
# or `$accumulator`) and anything unknown are refused: a filter must not run code.
READ_ONLY_OPERATORS = frozenset(
    {
        "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$type",
        "$and", "$or", "$nor", "$not", "$regex", "$options", "$all", "$elemMatch",
        "$size", "$mod",
    }
)  # fmt: skip
MAX_FILTER_CHARS = 64 * 1024
MAX_FILTER_DEPTH = 16
_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_OID = re.compile(r"[0-9a-fA-F]{24}")


class ScopeError(BackfillError):
    """A --filter, --ids-file or --limit we refuse; the message says which and why."""


def parse_filter(text: str) -> dict[str, Any]:
    """A MongoDB query from (extended) JSON, refused unless every operator only reads."""
    if len(text) > MAX_FILTER_CHARS:
        raise ScopeError(f"--filter is longer than {MAX_FILTER_CHARS} characters")
    try:
        query = json_util.loads(text)
    except (ValueError, TypeError) as exc:
        raise ScopeError(f"--filter is not JSON: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(query, dict):
        raise ScopeError('--filter must be a JSON object, e.g. \'{"category": "tools"}\'')
    _check_operators(query, 0)
    return query


def _check_operators(value: Any, depth: int) -> None:
    if depth > MAX_FILTER_DEPTH:
        raise ScopeError(f"--filter is nested deeper than {MAX_FILTER_DEPTH} levels")
    if isinstance(value, Mapping):
        for key, child in value.items():
            if not isinstance(key, str):
                raise ScopeError("--filter keys must be strings")
            if key.startswith("$") and key not in READ_ONLY_OPERATORS:
                raise ScopeError(f"--filter may only use read-only query operators, not {key}")
            _check_operators(child, depth + 1)
    elif isinstance(value, list):
        for child in value:
            _check_operators(child, depth + 1)


def parse_id(line: str) -> Any:
    """One `--ids-file` line as an `_id`.

    24 hex digits are an ObjectId, a plain decimal integer is an int, a double-quoted
    value is that string exactly (so `"42"` is the string 42), anything else is a string.
    """
    text = line.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if _OID.fullmatch(text):
        return ObjectId(text)
    if _INT.fullmatch(text):
        return int(text)
    return text


def parse_ids(lines: Iterable[str], *, where: str = "--ids-file") -> list[Any]:
    """The ids of an ids file, in file order, duplicates dropped; blank lines and `#` skipped."""
    ids: list[Any] = []
    seen: set[tuple[str, Any]] = set()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if len(text) > 1024:
            raise ScopeError(f"{where} line {number} is longer than 1024 characters")
        value = parse_id(text)
        key = (type(value).__name__, value)
        if key not in seen:
            seen.add(key)
            ids.append(value)
    if not ids:
        raise ScopeError(f"{where} holds no ids")
    return ids


def combine(*queries: Mapping[str, Any] | None) -> dict[str, Any]:
    """The conjunction of the non-empty queries ({} when none)."""
    parts = [dict(q) for q in queries if q]
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


# Server errors that say a query could not run now, not that it is wrong: a rejection
# is any other error to a query (BadValue, an invalid regex, a type mismatch, ...).
TRANSIENT_QUERY_CODES = frozenset(
    {
        6, 7, 24, 43, 46, 50, 89, 91, 112, 133, 134, 175, 189, 202, 262, 9001, 10107,
        11600, 11601, 11602, 13388, 13435, 13436,
    }
)  # fmt: skip


def is_transient(exc: pymongo.errors.OperationFailure) -> bool:
    """Whether the server failed a query for a passing reason (shutdown, step-down, timeout)."""
    labelled = any(
        exc.has_error_label(label) for label in ("RetryableWriteError", "TransientTransactionError")
    )
    return (
        labelled
        or isinstance(exc, pymongo.errors.ExecutionTimeout)
        or exc.code in TRANSIENT_QUERY_CODES
    )


def check_filter(coll: Collection, query: Mapping[str, Any], *, what: str = "--filter") -> None:
    """Raise ScopeError if the server rejects `query` on `coll` (an invalid `$regex`, ...).

    The server parses the whole filter before it plans; the `$in: []` on `_id` then
    leaves nothing to read, so the check costs no scan however large the collection.
    A connection failure or a transient server error is raised as it is.
    """
    if not query:
        return
    probe = {"$and": [dict(query), {"_id": {"$in": []}}]}
    try:
        list(coll.find(probe, {"_id": 1}).limit(1))
    except pymongo.errors.OperationFailure as exc:
        if is_transient(exc):
            raise
        detail = str(exc.details.get("errmsg") if exc.details else exc).splitlines()[0][:200]
        raise ScopeError(f"{what} is rejected by the server: {detail}") from None
