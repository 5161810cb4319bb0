"""Dotted field paths (`dimensions.weight_g`) in reads, writes and payloads (pure).

The rules, one place:
- A path is segments joined by `.`; each segment is a plain field name (letters, digits and
  `_`, not starting with a digit), so no segment is empty, an operator (`$...`) or an
  array index. `_id` and paths under it are never read or written.
- A payload answers a dotted write by the same path, nested: `dimensions.weight_g` is
  `{"dimensions": {"weight_g": 5}}`. A flat payload key holding a dot stays a hostile key.
- Every segment but the last must be a document (a mapping) for the path to exist; an
  array or a scalar on the way means the leaf is absent, and a document whose parent is
  such a value cannot take the leaf (`blocked_parent`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MAX_PATH_SEGMENTS = 16  # a payload nested deeper is refused anyway (payload.MAX_DEPTH)

_ABSENT = object()


def segments(path: str) -> list[str]:
    return path.split(".")


def lookup(doc: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """(True, value) when `doc` holds `path` through documents only; (False, None) otherwise."""
    if "." not in path:  # the common case, without the split
        value = doc.get(path, _ABSENT) if isinstance(doc, Mapping) else _ABSENT
        return (False, None) if value is _ABSENT else (True, value)
    node: Any = doc
    for seg in segments(path):
        if not isinstance(node, Mapping) or seg not in node:
            return False, None
        node = node[seg]
    return True, node


def get(doc: Mapping[str, Any], path: str) -> Any:
    """The value at `path`, or None when it is absent."""
    return lookup(doc, path)[1]


def blocked_parent(doc: Mapping[str, Any], path: str) -> tuple[str, str] | None:
    """(prefix, kind) of the first value on the way to `path` that exists but is not a
    document (MongoDB refuses to `$set` a field inside it); None when `path` can be set."""
    node: Any = doc
    parts = segments(path)
    for depth, seg in enumerate(parts[:-1]):
        if seg not in node:
            return None  # `$set` creates the missing documents on the way
        node = node[seg]
        if not isinstance(node, Mapping):
            kind = "an array" if isinstance(node, list | tuple) else _kind(node)
            return ".".join(parts[: depth + 1]), kind
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`{"a.b": 1, "c": 2}` -> `{"a": {"b": 1}, "c": 2}`: storable without dotted keys.

    The paths must not be prefixes of each other (a definition's writes never are).
    """
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = segments(path)
        node = out
        for seg in parents:
            node = node.setdefault(seg, {})
        node[leaf] = value
    return out


def projection(paths: Iterable[str]) -> dict[str, int]:
    """An inclusion projection of `paths`, leaving out any path under another one
    (MongoDB refuses `{"a": 1, "a.b": 1}` as a path collision)."""
    unique = sorted(set(paths), key=lambda p: (p.count("."), p))
    kept: list[str] = []
    for path in unique:
        if not any(path == k or path.startswith(k + ".") for k in kept):
            kept.append(path)
    return dict.fromkeys(kept, 1)


def overlap(a: str, b: str) -> bool:
    """Whether one path is the other or lies inside it."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def top(path: str) -> str:
    return path.split(".", 1)[0]
