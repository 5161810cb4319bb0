"""A backfill definition: what a team writes to run its backfill on the engine.

A definition is data (the collection it walks, an optional scope, the fields its source
reads, the source, the whitelist it may write) plus at most one function of its own
(`check`). Leases, checkpoints, rate limits, quarantine, progress, dry-run and verify are
the engine's. Workers find definitions in the modules named by BACKFILL_IMPORTS and in the
migrations directory (backfill_engine.registry).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backfill_engine import paths
from backfill_engine.errors import BackfillError
from backfill_engine.settings import DEFAULT_SUBCHUNK_SIZE, MAX_SUBCHUNK_SIZE
from backfill_engine.sources import Source

DEFAULT_SYNCED_FIELD = "backfill_synced_at"
PARAM_TYPES: tuple[type, ...] = (str, int, float, bool)
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

Check = Callable[[dict[str, Any]], dict[str, Any]]


class DefinitionError(BackfillError):
    """A backfill definition that cannot run; the message names the backfill and the field."""

    def __init__(self, name: str, problem: str) -> None:
        self.name, self.problem = name, problem
        super().__init__(f"backfill {name!r}: {problem}")


@dataclass(frozen=True)
class Backfill:
    """One backfill: walk `collection` (within `query`), ask `source`, write `writes` fields.

    - `reads`: the fields the source and the diff need from each document; dotted paths
      (`dimensions.height`) read a nested value.
    - `writes`: the whitelist, field name -> exact type; nothing else is ever written. A
      dotted path (`dimensions.weight_g`) writes that leaf only, siblings untouched; the
      payload answers it nested (`{"dimensions": {"weight_g": 5}}`). backfill_engine.paths
      holds the rules.
    - `check(fields) -> fields`: optional rules beyond types (raise InvalidPayloadError).
    - `synced_field`: stamped with the write time whenever a document changes.
    - `params`: typed parameters a run may set (`--param key=value`), name -> type.
    """

    name: str
    collection: str
    source: Source
    writes: Mapping[str, type]
    reads: tuple[str, ...] = ()
    query: Mapping[str, Any] = field(default_factory=dict)
    check: Check | None = None
    synced_field: str = DEFAULT_SYNCED_FIELD
    subchunk_size: int = DEFAULT_SUBCHUNK_SIZE
    params: Mapping[str, type] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise DefinitionError(self.name, "name must be lowercase letters, digits, - or _")
        if not self.writes:
            raise DefinitionError(self.name, "writes must name at least one field")
        for name in (*self.writes, *self.reads):
            problem = _path_problem(name)
            if problem:
                raise DefinitionError(self.name, f"field {name!r} {problem}")
        if not _FIELD.fullmatch(self.synced_field) or self.synced_field == "_id":
            raise DefinitionError(
                self.name, f"synced_field {self.synced_field!r} must be a top-level field name"
            )
        written = sorted(self.writes)
        for i, a in enumerate(written):
            for b in written[i + 1 :]:
                if paths.overlap(a, b):
                    raise DefinitionError(
                        self.name, f"writes {a!r} and {b!r} overlap: one lies inside the other"
                    )
            if paths.overlap(a, self.synced_field):
                raise DefinitionError(
                    self.name, f"writes {a!r} overlaps the synced_field {self.synced_field!r}"
                )
        for name, kind in self.writes.items():
            if not isinstance(kind, type):
                raise DefinitionError(self.name, f"writes[{name!r}] must be a type")
        for name, kind in self.params.items():
            if kind not in PARAM_TYPES:
                raise DefinitionError(self.name, f"param {name!r} must be str, int, float or bool")
        if not 1 <= self.subchunk_size <= MAX_SUBCHUNK_SIZE:
            raise DefinitionError(
                self.name, f"subchunk_size must be between 1 and {MAX_SUBCHUNK_SIZE}"
            )

    @property
    def projection(self) -> dict[str, int]:
        """What a worker reads of each document: the source's inputs and the written fields.

        A dotted write reads its whole top-level field: only then can a parent that is not
        a document (`dimensions: "n/a"`) be told from an absent one, since a projection of
        `dimensions.weight_g` leaves both out.
        """
        return paths.projection(
            (*self.reads, *(paths.top(w) if "." in w else w for w in self.writes))
        )

    @property
    def rate_bucket(self) -> str | None:
        """The rate-limit bucket of the source; backfills sharing an API share its bucket."""
        return self.source.rate_bucket


def _path_problem(path: str) -> str | None:
    """Why `path` cannot be read or written, as the end of a one-line error; None if fine."""
    parts = paths.segments(path)
    if parts[0] == "_id":
        return "is _id or lies under it: never read or written"
    if len(parts) > paths.MAX_PATH_SEGMENTS:
        return f"has more than {paths.MAX_PATH_SEGMENTS} segments"
    for seg in parts:
        if not seg:
            return "has an empty segment"
        if seg.startswith("$"):
            return f"has an operator segment {seg!r}"
        if not _FIELD.fullmatch(seg):
            return (
                f"has a segment {seg[:40]!r} that is not a field name "
                "(letters, digits and _, not starting with a digit)"
            )
    return None


def parse_params(backfill: Backfill, raw: Mapping[str, str]) -> dict[str, Any]:
    """Typed values for `key=value` parameters the backfill declares; BackfillError otherwise."""
    out: dict[str, Any] = {}
    for key, text in raw.items():
        kind = backfill.params.get(key)
        if kind is None:
            known = ", ".join(sorted(backfill.params)) or "none"
            raise DefinitionError(backfill.name, f"unknown param {key!r} (declared: {known})")
        out[key] = _convert(backfill.name, key, kind, text)
    return out


def _convert(name: str, key: str, kind: type, text: str) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise DefinitionError(name, f"param {key} must be true or false, got {text!r}")
    try:
        value = kind(text)
    except ValueError:
        raise DefinitionError(name, f"param {key} must be {kind.__name__}, got {text!r}") from None
    if isinstance(value, float) and value != value:
        raise DefinitionError(name, f"param {key} must be a number, got {text!r}")
    return value
