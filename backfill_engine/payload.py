"""Pure core of a backfill: validate a catalog payload, diff it against a product, hash it.

No I/O here: every function takes plain data and returns plain data, so the rules
that keep untrusted catalog input out of `products` are tested without a server.

Decisions worth knowing:
- Only whitelisted fields are ever written. Unknown keys are ignored (the catalog may
  add harmless fields such as `name`), but a hostile key *anywhere* in the payload
  (`$`-prefixed, containing `.`, or `_id`, at any depth) rejects the whole item: a
  payload that tries operator injection is not trusted for its other fields either,
  and the quarantine shows it to an operator.
- Types are exact: `bool` is not accepted where `int` is expected, and a diff treats
  `5.0` (double) and `5` (int) as different so the stored BSON type is corrected.
- The GTIN must be 8-14 ASCII digits; its check digit is not verified (real catalogs
  carry legacy codes whose check digits we should not second-guess).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

CATALOG_FIELDS: Mapping[str, type] = {
    "brand": str,
    "category": str,
    "gtin": str,
    "weight_grams": int,
}
SYNCED_AT_FIELD = "catalog_synced_at"

MAX_STRING_CHARS = 512  # per whitelisted string value
MAX_PAYLOAD_BYTES = 16 * 1024  # whole payload as compact JSON, unknown keys included
MAX_DEPTH = 16  # nesting levels scanned for hostile keys; deeper is itself rejected
MAX_WEIGHT_GRAMS = 10_000_000  # 10 tonnes: beyond any product we sell
BSON_INT_MIN, BSON_INT_MAX = -(2**63), 2**63 - 1  # the widest integer BSON stores
SNAPSHOT_LIMIT = 2048  # characters of a payload kept in quarantine

CHAIN_START = ""  # `prev_hash` of the first link of a batch's payload hash chain

# ASCII digits only: `\d` would also accept other scripts' digits.
_GTIN = re.compile(r"[0-9]{8,14}")


class InvalidPayloadError(ValueError):
    """A catalog payload we refuse to write; `reason` is one short, safe line."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(reason)


def _hostile_key(key: object) -> str | None:
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
    if not _utf8(key):
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


def _scan_keys(payload: Mapping[Any, Any]) -> None:
    """Reject hostile keys and values BSON cannot store, at any depth (one bad value would
    fail the whole batch's bulk write); iterative so a deep payload cannot exhaust the stack."""
    # Each entry carries the top-level key it sits under, to name the field in the reason.
    stack: list[tuple[Any, int, str | None]] = [(payload, 0, None)]
    while stack:
        value, depth, top = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidPayloadError(f"payload nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, Mapping):
            for key, child in value.items():
                why = _hostile_key(key)
                if why:
                    raise InvalidPayloadError(f"hostile payload: {why}")
                stack.append((child, depth + 1, top or key))
        elif isinstance(value, list | tuple):
            stack.extend((child, depth + 1, top) for child in value)
        elif why := _unstorable_value(value):
            where = _short(top) if top else "payload"
            raise InvalidPayloadError(f"{where} not storable in MongoDB: {why}", top)


def _check_field(name: str, expected: type, value: Any) -> Any:
    # `type(...) is` rather than isinstance: bool is a subclass of int.
    if type(value) is not expected:
        raise InvalidPayloadError(
            f"{name} must be {expected.__name__}, got {type(value).__name__}", name
        )
    if isinstance(value, str):
        if not value.strip():
            raise InvalidPayloadError(f"{name} is empty", name)
        if len(value) > MAX_STRING_CHARS:
            raise InvalidPayloadError(
                f"{name} is {len(value)} characters, limit {MAX_STRING_CHARS}", name
            )
    if name == "gtin" and not (isinstance(value, str) and _GTIN.fullmatch(value)):
        raise InvalidPayloadError("gtin must be 8-14 digits", name)
    if name == "weight_grams" and not (isinstance(value, int) and 0 < value <= MAX_WEIGHT_GRAMS):
        raise InvalidPayloadError(f"weight_grams {value} outside 1..{MAX_WEIGHT_GRAMS}", name)
    return value


def validate_item(payload: Any) -> dict[str, Any]:
    """Return the whitelisted catalog fields of `payload`, or raise InvalidPayloadError."""
    if not isinstance(payload, Mapping):
        raise InvalidPayloadError(f"payload is {type(payload).__name__}, not an object")
    _scan_keys(payload)
    try:
        size = len(json.dumps(payload, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidPayloadError(f"payload is not plain JSON: {type(exc).__name__}") from None
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidPayloadError(f"payload is {size} bytes, limit {MAX_PAYLOAD_BYTES}")
    fields: dict[str, Any] = {}
    for name, expected in CATALOG_FIELDS.items():
        if name not in payload:
            raise InvalidPayloadError(f"missing field {name}", name)
        fields[name] = _check_field(name, expected, payload[name])
    return fields


def _same(current: Any, desired: Any) -> bool:
    # 5 == 5.0 == True in Python, but they are different BSON types in MongoDB.
    return type(current) is type(desired) and current == desired


def diff_fields(current_doc: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `desired` that `current_doc` lacks or holds with another value or type."""
    return {
        name: value
        for name, value in desired.items()
        if name not in current_doc or not _same(current_doc[name], value)
    }


def build_set(
    diff: Mapping[str, Any], now: Any, synced_field: str = SYNCED_AT_FIELD
) -> dict[str, Any]:
    """The `$set` document for `diff`: empty when nothing changed, else stamped with `now`."""
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


def _canonical(value: Any) -> str:
    # Values that JSON cannot carry (datetime, Decimal128, ...) hash by their typed form.
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=typed_id
    )


def item_digest(product_id: Any, fields: Mapping[str, Any]) -> str:
    """sha256 hex over one product's id and enriched fields in canonical form."""
    body = _canonical({"id": typed_id(product_id), "fields": dict(fields)})
    return hashlib.sha256(body.encode()).hexdigest()


def chain_hash(prev_hash: str, digest: str) -> str:
    """Extend a running payload hash by one item digest (sha256 hex)."""
    return hashlib.sha256(f"{prev_hash}:{digest}".encode()).hexdigest()


def chain_items(prev_hash: str, items: Iterable[tuple[Any, Mapping[str, Any]]]) -> str:
    """Extend `prev_hash` by each (product_id, fields) in order; `verify` replays the same."""
    running = prev_hash
    for product_id, fields in items:
        running = chain_hash(running, item_digest(product_id, fields))
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


@dataclass(frozen=True)
class Backfill:
    """What a backfill adds to the engine: a name, its field whitelist and a payload mapping."""

    name: str
    fields: Mapping[str, type]
    map: Callable[[Any], dict[str, Any]]  # payload -> whitelisted fields; InvalidPayloadError
    synced_field: str = SYNCED_AT_FIELD


CATALOG_BACKFILL = Backfill(name="catalog", fields=CATALOG_FIELDS, map=validate_item)
