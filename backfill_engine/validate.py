"""Whitelist validation of an untrusted payload against a backfill's `writes` (pure).

Only whitelisted fields of the exact type are kept; a hostile key anywhere in the payload
(`$`-prefixed, dotted, `_id`, NUL) rejects the whole item; strings are non-empty and
bounded; then the backfill's own `check` applies its rules. The shared rules live in
backfill_engine.payload.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import bson
import bson.errors

from backfill_engine.payload import (
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    MAX_STRING_CHARS,
    InvalidPayloadError,
    _hostile_key,
    _unstorable_value,
)

Check = Callable[[dict[str, Any]], dict[str, Any]]


def validate_payload(
    payload: Any, writes: Mapping[str, type], check: Check | None = None
) -> dict[str, Any]:
    """The whitelisted fields of `payload`, or raise InvalidPayloadError with one safe line."""
    if not isinstance(payload, Mapping):
        raise InvalidPayloadError(f"payload is {type(payload).__name__}, not an object")
    _scan_keys(payload)
    try:
        # Every value must be storable: one that is not (a lone surrogate, an int beyond
        # 64 bits, an unknown type) would fail the whole sub-chunk's bulk write.
        bson.encode(dict(payload))
    except (bson.errors.InvalidDocument, UnicodeEncodeError, OverflowError, TypeError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InvalidPayloadError(f"payload not storable in MongoDB: {reason}") from None
    try:
        size = len(json.dumps(payload, separators=(",", ":"), default=_refuse).encode())
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise InvalidPayloadError(f"payload is not plain JSON: {type(exc).__name__}") from None
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidPayloadError(f"payload is {size} bytes, limit {MAX_PAYLOAD_BYTES}")
    fields: dict[str, Any] = {}
    for name, expected in writes.items():
        if name not in payload:
            raise InvalidPayloadError(f"missing field {name}", name)
        fields[name] = _typed(name, expected, payload[name])
    return check(fields) if check is not None else fields


def _scan_keys(payload: Mapping[Any, Any]) -> None:
    """Reject hostile keys at any depth; iterative so a deep payload cannot exhaust the stack."""
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
        elif isinstance(value, str | int) and (why := _unstorable_value(value)):
            # Other BSON types (dates, ObjectIds, ...) a pure-function source may hand over
            # are checked by encoding the whole payload below.
            raise InvalidPayloadError(f"{top or 'payload'} not storable in MongoDB: {why}", top)


def _refuse(value: Any) -> Any:
    # Values a pure-function source hands over (datetime, ObjectId, ...) count by their text.
    return str(value)


def _typed(name: str, expected: type, value: Any) -> Any:
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
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPayloadError(f"{name} is not valid UTF-8 text", name) from None
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise InvalidPayloadError(f"{name} does not fit a 64-bit integer", name)
    return value
