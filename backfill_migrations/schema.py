"""A small builder for MongoDB `$jsonSchema` validators.

    schema().bson_type("object").field("brand", SchemaBuilder.string(), required=True).build()
    == {"$jsonSchema": {"bsonType": "object", "required": ["brand"],
                        "properties": {"brand": {"bsonType": "string"}}}}

`schema()` makes a root builder whose build() wraps the result in `{"$jsonSchema": ...}`; the
type helpers (`string()`, `int()`, `long()`, `bool()`, `date()`, `object(props)`, `array(items)`)
make nested builders whose build() returns the plain schema.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any


def _plain(value: SchemaBuilder | Mapping[str, Any]) -> dict[str, Any]:
    return value.to_dict() if isinstance(value, SchemaBuilder) else dict(value)


class SchemaBuilder:
    """Accumulates one (sub)schema; every setter returns the builder for chaining."""

    def __init__(self, *, root: builtins.bool = False) -> None:
        self._root = root
        self._doc: dict[str, Any] = {}

    # --- setters -----------------------------------------------------------------------

    def bson_type(self, *types: str) -> SchemaBuilder:
        """Set `bsonType`; several types become a list (e.g. "int", "long")."""
        if not types:
            raise ValueError("bson_type needs at least one type")
        self._doc["bsonType"] = types[0] if len(types) == 1 else list(types)
        return self

    def required(self, *names: str) -> SchemaBuilder:
        """Add field names to `required` (kept in order, without duplicates)."""
        req: list[str] = self._doc.setdefault("required", [])
        req.extend(n for n in names if n not in req)
        return self

    def properties(self, props: Mapping[str, SchemaBuilder | Mapping[str, Any]]) -> SchemaBuilder:
        """Merge several named sub-schemas into `properties`."""
        target: dict[str, Any] = self._doc.setdefault("properties", {})
        for name, sub in props.items():
            target[name] = _plain(sub)
        return self

    def field(
        self,
        name: str,
        sub: SchemaBuilder | Mapping[str, Any],
        *,
        required: builtins.bool = False,
    ) -> SchemaBuilder:
        """Add one property, and mark it required when asked."""
        self.properties({name: sub})
        if required:
            self.required(name)
        return self

    def enum(self, values: Iterable[Any]) -> SchemaBuilder:
        """Restrict the value to a fixed set."""
        self._doc["enum"] = list(values)
        return self

    def minimum(self, value: float) -> SchemaBuilder:
        """Lower bound for a number (inclusive)."""
        self._doc["minimum"] = value
        return self

    def maximum(self, value: float) -> SchemaBuilder:
        """Upper bound for a number (inclusive)."""
        self._doc["maximum"] = value
        return self

    def additional_properties(self, allowed: builtins.bool) -> SchemaBuilder:
        """Allow or forbid fields not listed in `properties`."""
        self._doc["additionalProperties"] = allowed
        return self

    def description(self, text: str) -> SchemaBuilder:
        """A note for people reading the validator."""
        self._doc["description"] = text
        return self

    # --- type helpers (each returns a new nested builder) ---------------------------------

    @staticmethod
    def string() -> SchemaBuilder:
        return SchemaBuilder().bson_type("string")

    @staticmethod
    def int() -> SchemaBuilder:
        return SchemaBuilder().bson_type("int")

    @staticmethod
    def long() -> SchemaBuilder:
        return SchemaBuilder().bson_type("long")

    @staticmethod
    def bool() -> SchemaBuilder:
        return SchemaBuilder().bson_type("bool")

    @staticmethod
    def date() -> SchemaBuilder:
        return SchemaBuilder().bson_type("date")

    @staticmethod
    def object(
        props: Mapping[str, SchemaBuilder | Mapping[str, Any]] | None = None,
    ) -> SchemaBuilder:
        b = SchemaBuilder().bson_type("object")
        return b.properties(props) if props else b

    @staticmethod
    def array(items: SchemaBuilder | Mapping[str, Any] | None = None) -> SchemaBuilder:
        b = SchemaBuilder().bson_type("array")
        if items is not None:
            b._doc["items"] = _plain(items)
        return b

    # --- output ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The plain schema, never wrapped (what a parent embeds)."""
        return _deep_copy(self._doc)

    def build(self) -> dict[str, Any]:
        """`{"$jsonSchema": ...}` for a root builder, the plain schema for a nested one."""
        plain = self.to_dict()
        return {"$jsonSchema": plain} if self._root else plain

    def __repr__(self) -> str:
        return f"SchemaBuilder({self.build()!r})"


def _deep_copy(value: Any) -> Any:
    # Copies so a built validator can be mutated without changing the builder.
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def schema() -> SchemaBuilder:
    """A root builder: build() returns a collection validator `{"$jsonSchema": {...}}`."""
    return SchemaBuilder(root=True)
