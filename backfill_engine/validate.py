"""Whitelist validation of an untrusted payload against a backfill's `writes` (pure).

Only whitelisted fields of the exact type are kept; a hostile key anywhere in the payload
(`$`-prefixed, dotted, `_id`, NUL) rejects the whole item; strings are non-empty and
bounded; then the backfill's own `check` applies its rules. The shared rules live in
backfill_engine.payload. A dotted write (`dimensions.weight_g`) is answered by the nested
payload (`{"dimensions": {"weight_g": 5}}`); its leaf gets the type check and the fields
come back keyed by the dotted path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import bson
import bson.errors

from backfill_engine import paths
from backfill_engine.payload import (
    MAX_PAYLOAD_BYTES,
    MAX_STRING_CHARS,
    InvalidPayloadError,
    scan_payload,
)

Check = Callable[[dict[str, Any]], dict[str, Any]]


def validate_payload(
    payload: Any, writes: Mapping[str, type], check: Check | None = None
) -> dict[str, Any]:
    """The whitelisted fields of `payload`, or raise InvalidPayloadError with one safe line."""
    if not isinstance(payload, Mapping):
        raise InvalidPayloadError(f"payload is {type(payload).__name__}, not an object")
    scan_payload(payload, leaves=False)  # hostile keys and depth, before the encoder recurses
    try:
        # Every value must be storable: one that is not (a lone surrogate, an int beyond
        # 64 bits, an unknown type) would fail the whole sub-chunk's bulk write.
        size = len(bson.encode(payload))
    except (bson.errors.InvalidDocument, UnicodeEncodeError, OverflowError, TypeError) as exc:
        scan_payload(payload)  # names the field when it can
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InvalidPayloadError(f"payload not storable in MongoDB: {reason}") from None
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidPayloadError(f"payload is {size} bytes, limit {MAX_PAYLOAD_BYTES}")
    fields: dict[str, Any] = {}
    for name, expected in writes.items():
        if "." in name:
            found, value = paths.lookup(payload, name)
        else:
            found, value = name in payload, payload.get(name)
        if not found:
            blocked = paths.blocked_parent(payload, name) if "." in name else None
            why = f" ({blocked[0]} is {blocked[1]}, not an object)" if blocked else ""
            raise InvalidPayloadError(f"missing field {name}{why}", name)
        fields[name] = _typed(name, expected, value)
    return check(fields) if check is not None else fields


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
    if isinstance(value, float | Mapping | list):
        _finite(name, value)
    # Text that is not UTF-8 and integers beyond 64 bits failed the encoding above.
    return value


def _finite(name: str, value: Any) -> None:
    """Refuse NaN and infinities anywhere in the value: NaN equals nothing, itself included,
    so the diff would rewrite it on every run, and neither is a value any source means."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidPayloadError(f"{name} is {v!r}, not a finite number", name)
        if isinstance(v, Mapping):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
