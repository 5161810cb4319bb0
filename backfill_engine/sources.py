"""Where a backfill's new values come from: a pure function, another collection, an HTTP API.

A source answers a sub-chunk of documents at once with a SourceResult keyed by `_id`:
a payload per id, the ids it has nothing for (missing), and per-id errors. Payloads are
untrusted: the engine validates them against the backfill's whitelist before any write.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import bson
from bson.regex import Regex
from pymongo.database import Database

from backfill_engine import paths

Doc = Mapping[str, Any]


@dataclass
class SourceResult:
    """What a source answered for a sub-chunk, keyed by the original `_id`s."""

    items: dict[Any, Any] = field(default_factory=dict)
    missing: list[Any] = field(default_factory=list)
    errors: dict[Any, str] = field(default_factory=dict)
    http_status: int | None = None

    @classmethod
    def empty(cls) -> SourceResult:
        return cls()

    @classmethod
    def all_invalid(cls, ids: Sequence[Any], reason: str, status: int | None) -> SourceResult:
        return cls(errors=dict.fromkeys(ids, reason), http_status=status)


@dataclass
class SourceContext:
    """What a source may use while fetching: the database, the run's params, its HTTP client."""

    db: Database
    params: Mapping[str, Any]
    http: Any = None  # the per-process HTTP client of an HttpSource (engine-built)
    should_stop: Callable[[], bool] | None = None  # asked between retries of a slow call
    # What HTTP calls cost this batch (requests, http_429, http_5xx, rate_wait_s); the
    # batch run adds it to the batch document with each checkpoint, for metrics.
    stats: dict[str, float] = field(default_factory=dict)


class Source(Protocol):
    """Anything that answers payloads for documents."""

    @property
    def rate_bucket(self) -> str | None:
        """The shared rate limit it is called under; None: no API, no limit."""

    @property
    def keyed_by_string(self) -> bool:
        """True when ids travel as strings (so 5 and "5" look the same to it)."""

    def fetch(self, docs: Sequence[Doc], ctx: SourceContext) -> SourceResult: ...


@dataclass(frozen=True)
class FunctionSource:
    """New values as a pure function of the document (and the run's params).

    `fn(doc, params)` returns the payload, or None when there is nothing to write for
    that document (counted as missing). An exception it raises quarantines that one
    document as invalid, with the exception's class and message.
    """

    fn: Callable[[Doc, Mapping[str, Any]], Mapping[str, Any] | None]
    rate_bucket: str | None = None
    keyed_by_string: bool = False

    def fetch(self, docs: Sequence[Doc], ctx: SourceContext) -> SourceResult:
        result = SourceResult()
        for doc in docs:
            try:
                payload = self.fn(doc, ctx.params)
            except Exception as exc:  # the team's code: one bad document, not a failed batch
                result.errors[doc["_id"]] = f"{type(exc).__name__}: {str(exc)[:300]}"
                continue
            if payload is None:
                result.missing.append(doc["_id"])
            else:
                result.items[doc["_id"]] = payload
        return result


@dataclass(frozen=True)
class CollectionSource:
    """New values from another collection: its document whose `key` equals our `local`.

    One `$in` query per sub-chunk. `fields` are the fields of the other document that
    make the payload (all of them when empty): a tuple keeps their names, a mapping
    `{"theirs": "ours"}` renames them (`fields={"name": "customer_name"}`). Dotted names on
    either side are paths: read nested from their document, nested into the payload. A
    key matched by several documents is an error for that id, never a guess.
    """

    collection: str
    key: str
    local: str = "_id"
    fields: tuple[str, ...] | Mapping[str, str] = ()
    rate_bucket: str | None = None
    keyed_by_string: bool = False

    def fetch(self, docs: Sequence[Doc], ctx: SourceContext) -> SourceResult:
        result = SourceResult()
        wanted: dict[bytes, list[Any]] = {}
        values: dict[bytes, Any] = {}
        for doc in docs:
            value = paths.get(doc, self.local)  # `local` may be a dotted path too
            if value is None:
                result.missing.append(doc["_id"])
                continue
            refused = _unusable_key(value)
            if refused:
                result.errors[doc["_id"]] = f"{self.local} is {refused}: cannot be looked up"
                continue
            k = _exact_key(value)
            values[k] = value
            wanted.setdefault(k, []).append(doc["_id"])
        renamed = self._renamed()
        projection = paths.projection((*renamed, self.key)) if self.fields else None
        found: dict[bytes, Any] = {}
        twice: set[bytes] = set()
        query = {self.key: {"$in": list(values.values())}}
        for other in ctx.db[self.collection].find(query, projection) if values else ():
            k = _exact_key(other.get(self.key))
            if k not in wanted:
                continue  # matched by the server's looser equality (1 == 1.0, array elements)
            if k in found:
                twice.add(k)
            found[k] = self._payload(other, renamed)
        for k, ids in wanted.items():
            for pid in ids:
                if k in twice:
                    result.errors[pid] = f"{self.collection}.{self.key} matches more than once"
                elif k in found:
                    result.items[pid] = found[k]
                else:
                    result.missing.append(pid)
        return result

    def __post_init__(self) -> None:
        ours = sorted(self._renamed().values())
        for i, a in enumerate(ours):
            for b in ours[i + 1 :]:
                if paths.overlap(a, b):
                    raise ValueError(
                        f"CollectionSource({self.collection!r}): fields {a!r} and {b!r} "
                        "overlap in the payload"
                    )

    def _renamed(self) -> dict[str, str]:
        """Their field -> our field, for every field the payload takes."""
        if isinstance(self.fields, Mapping):
            return dict(self.fields)
        # The tuple form never copies the lookup key (nor `_id`) into the payload.
        return {f: f for f in self.fields if f not in ("_id", self.key)}

    def _payload(self, other: Doc, renamed: Mapping[str, str]) -> dict[str, Any]:
        if not self.fields:
            return {f: v for f, v in other.items() if f not in ("_id", self.key)}
        picked: dict[str, Any] = {}
        for theirs, ours in renamed.items():
            found, value = paths.lookup(other, theirs)
            if found:
                picked[ours] = value
        return paths.nest(picked)

    def __hash__(self) -> int:  # a mapping `fields` is not hashable itself
        fields = tuple(sorted(self._renamed().items()))
        return hash((self.collection, self.key, self.local, fields, self.rate_bucket))


def _unusable_key(value: Any) -> str | None:
    """Why `value` cannot be a lookup key, or None. `$in` matches an array's elements and
    a pattern's matches, never the value itself, so either would pick a wrong document."""
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, re.Pattern | Regex):
        return "a regular expression"
    return None


def _exact_key(value: Any) -> bytes:
    """A key equal only for values of the same BSON type and value: Python's `True == 1`
    (and hash) would let a document get another key's answer."""
    return bson.encode({"k": value})


@dataclass(frozen=True)
class HttpSource:
    """An HTTP API answering `GET {url}{path}?ids=a,b,c` with `{"items": [...], "missing": [...]}`.

    The base URL and bearer token come from the environment variables named here, so a
    definition holds no secret. Every call waits for a token of the shared bucket
    `rate_bucket`: two backfills calling one API share its rate, different APIs don't.
    Retries, 429 `Retry-After`, timeouts, the overall deadline and the splitting of a
    request that fails for some ids' content (only those ids end up in error) are the
    engine's (backfill_engine/http_client.py).
    """

    url_env: str
    token_env: str | None = None
    path: str = "/"
    rate_bucket: str | None = "http"
    keyed_by_string: bool = True

    def fetch(self, docs: Sequence[Doc], ctx: SourceContext) -> SourceResult:
        if ctx.http is None:
            raise RuntimeError(f"no HTTP client was built for {self.url_env}")
        ids = [d["_id"] for d in docs]
        answer = ctx.http.fetch(ids, should_stop=ctx.should_stop, stats=ctx.stats)
        return SourceResult(
            items=answer.items,
            missing=list(answer.missing),
            errors=answer.errors,
            http_status=getattr(answer, "http_status", None),
        )
