"""Pure core of a backfill: hostile keys and storability of a payload, diff, hash, snapshot.

No I/O here: every function takes plain data and returns plain data, so the rules
that keep untrusted source input out of a collection are tested without a server.

Decisions worth knowing:
- Only whitelisted fields are ever written (backfill_engine.validate). Unknown keys are
  ignored (an API may add harmless fields such as `name`), but a hostile key *anywhere*
  in the payload (`$`-prefixed, containing `.`, or `_id`, at any depth) rejects the whole
  item: a payload that tries operator injection is not trusted for its other fields
  either, and the quarantine shows it to an operator.
- Types are exact: `bool` is not accepted where `int` is expected, and a diff treats
  `5.0` (double) and `5` (int) as different so the stored BSON type is corrected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from bson import ObjectId

from backfill_engine import paths

MAX_STRING_CHARS = 512  # per whitelisted string value
MAX_PAYLOAD_BYTES = 16 * 1024  # whole payload encoded as BSON, unknown keys included
MAX_DEPTH = 16  # nesting levels scanned for hostile keys; deeper is itself rejected
BSON_INT_MIN, BSON_INT_MAX = -(2**63), 2**63 - 1  # the widest integer BSON stores
SNAPSHOT_LIMIT = 2048  # characters of a payload kept in quarantine

CHAIN_START = ""  # `prev_hash` of the first link of a batch's payload hash chain


class InvalidPayloadError(ValueError):
    """A payload we refuse to write; `reason` is one short, safe line."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(reason)


def _hostile_key(key: object, *, check_utf8: bool = True) -> str | None:
    """Why `key` may not reach MongoDB, or None when it is harmless."""
    if not isinstance(key, str):
        return f"non-string key {type(key).__name__}"
    if key.startswith("$"):
        return f"operator-like key {_short(key)!r}"
    if "." in key:
        return f"dotted key {_short(key)!r}"
    if key == "_id":
        return "key '_id'"
    if "\x00" in key:
        return "key with NUL byte"
    if check_utf8 and not _utf8(key):
        return "key that is not valid UTF-8 (lone surrogate)"
    return None


def _utf8(text: str) -> bool:
    """Whether BSON can store `text`: a lone surrogate ("\\ud800") has no UTF-8 form."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unstorable_value(value: object) -> str | None:
    """Why BSON cannot store this leaf value, or None when it can."""
    if isinstance(value, str) and not _utf8(value):
        return "string that is not valid UTF-8 (lone surrogate)"
    if isinstance(value, int) and not BSON_INT_MIN <= value <= BSON_INT_MAX:
        return "integer beyond 64 bits"
    if value is not None and not isinstance(value, str | int | float | Mapping | list | tuple):
        return f"value of type {type(value).__name__}"
    return None


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


_PLAIN_LEAVES = frozenset((str, int, float, bool, type(None)))


def scan_payload(payload: Mapping[Any, Any], *, leaves: bool = True) -> None:
    """Reject hostile keys and nesting deeper than MAX_DEPTH; with `leaves`, also the first
    value BSON cannot store, named by its top-level field. Iterative, so a deep payload
    cannot exhaust the stack.

    `leaves=False` is the cheap pass run on every payload before it is encoded; encoding
    then finds what BSON cannot store, and only a payload that fails it pays for the full
    pass that names the field (backfill_engine.validate).
    """
    # Each entry carries the top-level key it sits under, to name the field in the reason.
    stack: list[tuple[Any, int, str | None]] = [(payload, 0, None)]
    while stack:
        value, depth, top = stack.pop()
        if not leaves and type(value) in _PLAIN_LEAVES:
            continue  # the common case, without the slower ABC checks below
        if depth > MAX_DEPTH:
            raise InvalidPayloadError(f"payload nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, Mapping):
            for key, child in value.items():
                why = _hostile_key(key, check_utf8=leaves)
                if why:
                    raise InvalidPayloadError(f"hostile payload: {why}")
                stack.append((child, depth + 1, top or key))
        elif isinstance(value, list | tuple):
            stack.extend((child, depth + 1, top) for child in value)
        elif leaves and isinstance(value, str | int) and (why := _unstorable_value(value)):
            # Other BSON types (dates, ObjectIds, ...) a pure-function source may hand
            # over are left to the encoder.
            where = _short(top) if top else "payload"
            raise InvalidPayloadError(f"{where} not storable in MongoDB: {why}", top)


def _same(current: Any, desired: Any) -> bool:
    # 5 == 5.0 == True in Python, but they are different BSON types in MongoDB.
    return type(current) is type(desired) and current == desired


def diff_fields(current_doc: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `desired` that `current_doc` lacks or holds with another value or type.

    A dotted name compares the leaf at that path (backfill_engine.paths).
    """
    out: dict[str, Any] = {}
    for name, value in desired.items():
        if "." in name:
            found, current = paths.lookup(current_doc, name)
            if not found or not _same(current, value):
                out[name] = value
        elif name not in current_doc or not _same(current_doc[name], value):
            out[name] = value
    return out


def build_set(diff: Mapping[str, Any], now: Any, synced_field: str) -> dict[str, Any]:
    """The `$set` document for `diff`: empty when nothing changed, else stamped with `now`.

    Dotted names stay dotted: `$set` then writes the leaf, and the sibling fields of its
    parent document survive.
    """
    if not diff:
        return {}
    return {**diff, synced_field: now}


def typed_id(value: Any) -> str:
    """A stable string for an `_id` that keeps its type: oid:<hex>, int:<n>, str:<s>, ..."""
    if isinstance(value, ObjectId):
        return f"oid:{value}"
    if isinstance(value, bool):
        return f"bool:{'true' if value else 'false'}"
    if isinstance(value, int):
        return f"int:{value}"
    if isinstance(value, str):
        return f"str:{value}"
    if isinstance(value, float):
        return f"float:{value!r}"
    return f"{type(value).__name__}:{value}"


# Built once: json.dumps with any non-default argument builds a new encoder per call.
# Values that JSON cannot carry (datetime, Decimal128, ...) hash by their typed form.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=typed_id
)


def _canonical(value: Any) -> str:
    return _CANONICAL.encode(value)


def item_digest(doc_id: Any, fields: Mapping[str, Any]) -> str:
    """sha256 hex over one document's id and written fields in canonical form."""
    body = _canonical({"id": typed_id(doc_id), "fields": dict(fields)})
    return hashlib.sha256(body.encode()).hexdigest()


def chain_hash(prev_hash: str, digest: str) -> str:
    """Extend a running payload hash by one item digest (sha256 hex)."""
    return hashlib.sha256(f"{prev_hash}:{digest}".encode()).hexdigest()


def chain_items(prev_hash: str, items: Iterable[tuple[Any, Mapping[str, Any]]]) -> str:
    """Extend `prev_hash` by each (doc_id, fields) in order; `verify` replays the same."""
    running = prev_hash
    for doc_id, fields in items:
        running = chain_hash(running, item_digest(doc_id, fields))
    return running


def _shrink(value: Any, limit: int, depth: int = 0) -> Any:
    """A bounded copy for snapshots: long strings, big containers and deep nesting cut."""
    if depth > MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"...<{len(value)} chars>"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {str(k)[:limit]: _shrink(v, limit, depth + 1) for k, v in items[:50]}
        if len(items) > 50:
            out["..."] = f"<{len(items) - 50} more keys>"
        return out
    if isinstance(value, list | tuple):
        shown = [_shrink(v, limit, depth + 1) for v in value[:50]]
        if len(value) > 50:
            shown.append(f"<{len(value) - 50} more items>")
        return shown
    if value is None or isinstance(value, bool | int | float):
        return value
    return typed_id(value)


def payload_snapshot(payload: Any, limit: int = SNAPSHOT_LIMIT) -> str:
    """At most `limit` characters of JSON showing `payload`, for the quarantine record."""
    text = json.dumps(_shrink(payload, limit), sort_keys=True, ensure_ascii=True, default=str)
    if len(text) <= limit:
        return text
    marker = "...<truncated>"
    return text[: max(0, limit - len(marker))] + marker[:limit]
