"""Where a backfill's new values come from: a pure function, another collection, an HTTP API.

A source answers a sub-chunk of documents at once with a SourceResult keyed by `_id`:
a payload per id, the ids it has nothing for (missing), and per-id errors. Payloads are
untrusted: the engine validates them against the backfill's whitelist before any write.

Writing a source of one's own: any object with `rate_bucket`, `keyed_by_string` and
`fetch(docs, ctx) -> SourceResult` (the `Source` protocol). One that calls an HTTP API
declares it as `http = HttpEndpoint(url_env=..., token_env=...)`; the engine then hands
it a ready client as `ctx.http`, with the rate bucket, retries, `Retry-After`, timeouts,
the overall deadline, the body cap, redirect refusal, redaction and statistics built in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import bson
from bson.regex import Regex
from pymongo.database import Database

from backfill_engine import paths
from backfill_engine.errors import BackfillError

if TYPE_CHECKING:
    from backfill_engine.http_client import HttpSourceClient, SourceHttp

Doc = Mapping[str, Any]

# An answer's body is capped for this many items (http_client.MAX_RESPONSE_BYTES), so no
# request asks for more.
MAX_IDS_PER_REQUEST = 100


@dataclass
class SourceResult:
    """What a source answered for a sub-chunk, keyed by the ids it was asked for.

    `items`: id -> payload; `missing`: ids it has nothing for; `errors`: id -> reason (the
    id is quarantined as invalid). `http_status` is the last HTTP answer's status and
    `requests` the HTTP requests it cost, retries included (both unset without HTTP).
    """

    items: dict[Any, Any] = field(default_factory=dict)
    missing: list[Any] = field(default_factory=list)
    errors: dict[Any, str] = field(default_factory=dict)
    http_status: int | None = None
    requests: int = 0

    @classmethod
    def empty(cls) -> SourceResult:
        """The answer for no ids."""
        return cls()

    @classmethod
    def all_invalid(
        cls, ids: Sequence[Any], reason: str, status: int | None = None
    ) -> SourceResult:
        """Every id in error with `reason`, e.g. after the API kept sending garbage."""
        return cls(errors=dict.fromkeys(ids, reason), http_status=status)

    def merge(self, other: SourceResult) -> None:
        """Fold `other` (another part's answer) into this one."""
        self.items.update(other.items)
        self.missing.extend(other.missing)
        self.errors.update(other.errors)
        self.requests += other.requests
        if other.http_status is not None:
            self.http_status = other.http_status


@dataclass(frozen=True)
class HttpEndpoint:
    """An HTTP API a source calls: the variables holding its base URL and bearer token.

    Names, not values, so a definition holds no secret. A worker lacking `url_env`, or
    `token_env` when the API needs its token, leaves the backfill to workers that have
    them; `token_required=False` says the API also answers without one (none is sent).
    """

    url_env: str
    token_env: str | None = None
    token_required: bool = True

    def unmet(self, env: Mapping[str, str]) -> list[str]:
        """The variables this endpoint needs that `env` does not set (or sets empty)."""
        needed = [self.url_env]
        if self.token_env and self.token_required:
            needed.append(self.token_env)
        return [v for v in needed if not env.get(v)]


@dataclass
class SourceContext:
    """What a source may use while fetching: the database, the run's params, its HTTP client."""

    db: Database
    params: Mapping[str, Any]
    # The engine-built, per-process client for the source's `http` endpoint (None when it
    # declares none); sources use it through `http`, which binds it to this batch.
    http_client: HttpSourceClient | None = None
    should_stop: Callable[[], bool] | None = None  # asked between retries of a slow call
    # What HTTP calls cost this batch (requests, http_429, http_5xx, rate_wait_s); the
    # batch run adds it to the batch document with each checkpoint, for metrics.
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def http(self) -> SourceHttp:
        """The engine's HTTP client for this source, for this batch (see SourceHttp)."""
        if self.http_client is None:
            raise BackfillError(
                "this source declares no `http = HttpEndpoint(...)`, so it has no HTTP client"
            )
        return self.http_client.bound(self.should_stop, self.stats)


class Source(Protocol):
    """Anything that answers payloads for documents.

    A source calling an HTTP API also has `http: HttpEndpoint` (see `http_endpoint`);
    the engine then fills `ctx.http`.
    """

    @property
    def rate_bucket(self) -> str | None:
        """The shared rate limit it is called under; None: no API, no limit."""

    @property
    def keyed_by_string(self) -> bool:
        """True when ids travel as strings (so 5 and "5" look the same to it)."""

    def fetch(self, docs: Sequence[Doc], ctx: SourceContext) -> SourceResult:
        """Answer `docs` (each with its `_id` and the backfill's `reads`), keyed by `_id`.

        An exception fails the whole sub-chunk's attempt (retried as the batch is), except
        SourceProtocolError, which quarantines the sub-chunk's ids as invalid.
        """
        ...


def http_endpoint(source: object) -> HttpEndpoint | None:
    """The HTTP API `source` declares in its `http` attribute, or None."""
    endpoint = getattr(source, "http", None)
    if endpoint is None or isinstance(endpoint, HttpEndpoint):
        return endpoint
    raise BackfillError(
        f"{type(source).__name__}.http must be an HttpEndpoint, not {type(endpoint).__name__}"
    )


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


# HTTP sources: how an API is asked for ids, and how its answer reads.


@dataclass(frozen=True)
class HttpRequest:
    """One request, relative to the API's base URL.

    `path` may carry a query string, already encoded; `params` are added (and encoded)
    by the client; `json` is sent as the body. `route` names the request in logs and
    errors without its ids (default: `path` up to its `?`).
    """

    method: str = "GET"
    path: str = "/"
    params: Mapping[str, str] | None = None
    json: Any = None
    route: str | None = None

    @property
    def name(self) -> str:
        return self.route if self.route is not None else self.path.partition("?")[0]


@dataclass(frozen=True)
class Query:
    """Ids in the query string: `GET {path}?{param}=a,b,c`, each id percent-encoded."""

    param: str = "ids"
    separator: str = ","
    ids_per_request: int = MAX_IDS_PER_REQUEST

    def request(self, path: str, ids: list[str]) -> HttpRequest:
        joined = self.separator.join(quote(i, safe="") for i in ids)
        glue = "&" if "?" in path else "?"
        return HttpRequest("GET", f"{path}{glue}{quote(self.param, safe='')}={joined}")


@dataclass(frozen=True)
class PostJson:
    """Ids in a JSON body: `POST {path}` with `{key: [a, b, c]}`."""

    key: str = "ids"
    ids_per_request: int = MAX_IDS_PER_REQUEST

    def request(self, path: str, ids: list[str]) -> HttpRequest:
        return HttpRequest("POST", path, json={self.key: ids})


@dataclass(frozen=True)
class PerPath:
    """One id per request, in the path: `GET /items/{id}`. A 404 means the id is unknown."""

    placeholder: str = "{id}"

    @property
    def ids_per_request(self) -> int:
        return 1

    def request(self, path: str, ids: list[str]) -> HttpRequest:
        (one,) = ids
        return HttpRequest("GET", path.replace(self.placeholder, quote(one, safe="")), route=path)


@dataclass(frozen=True)
class Items:
    """An answer listing items: `{at: [{id_field: ..., ...}], missing: [...]}`.

    `at` is where the list is (dotted for nesting, "" for a body that is the list);
    `id_field` the field naming each item's id; `missing` the key of the list of unknown
    ids, or None for an API that just omits them. With a `missing` list, an id neither
    listed nor answered is an error (the API broke its contract), not a guess.
    """

    at: str = "items"
    id_field: str = "id"
    missing: str | None = "missing"

    def read(self, body: Any, ids: list[str]) -> SourceResult:
        entries = _at(body, self.at)
        if not isinstance(entries, list):
            raise ValueError(f"body lacks the {self.at or 'top-level'} list")
        listed: Any = []
        if self.missing is not None:
            listed = body.get(self.missing, []) if isinstance(body, dict) else None
            if not isinstance(listed, list):
                raise ValueError(f"body's {self.missing} is not a list")
        wanted = set(ids)
        answer = SourceResult()
        for entry in entries:
            key = _wire_id(entry.get(self.id_field)) if isinstance(entry, dict) else None
            if key is None or key not in wanted:
                # Cannot be attributed to an id asked for: that id ends up without an entry.
                continue
            if key in answer.items:
                answer.errors[key] = "the API answered this id twice"
            answer.items[key] = entry
        if self.missing is None:
            answer.missing = [i for i in ids if i not in answer.items]
        else:
            answer.missing = [m for m in dict.fromkeys(map(_wire_id, listed)) if m in wanted]
        return answer


@dataclass(frozen=True)
class Item:
    """An answer that is one item (a one-id path): the body, or the object at `at`.

    With `id_field`, the item must name the id asked for there; without, it is trusted to.
    """

    at: str = ""
    id_field: str | None = None

    def read(self, body: Any, ids: list[str]) -> SourceResult:
        (one,) = ids
        entry = _at(body, self.at)
        if not isinstance(entry, dict):
            raise ValueError(f"body lacks the {self.at or 'top-level'} object")
        if self.id_field is not None and _wire_id(entry.get(self.id_field)) != one:
            return SourceResult(errors={one: f"the API answered another {self.id_field}"})
        return SourceResult(items={one: entry})


def _at(body: Any, path: str) -> Any:
    """The value at a dotted `path` of a JSON body; None where a step is absent."""
    node = body
    for step in path.split(".") if path else ():
        node = node.get(step) if isinstance(node, dict) else None
    return node


def _wire_id(value: Any) -> str | None:
    """An id as an API names it (a string, or a JSON integer), in the form we sent it."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


Ask = Query | PostJson | PerPath
Answer = Items | Item
# The two hooks for an API no shape fits: how to ask for these id strings, and how to read
# a 200's parsed JSON body into a SourceResult keyed by them (raise ValueError for a body
# that breaks the API's contract; it is retried and split like a garbled one).
RequestHook = Callable[[list[str]], HttpRequest]
ReadHook = Callable[[Any, list[str]], SourceResult]


@dataclass(frozen=True)
class Shape:
    """An API's request and answer shape, as the HTTP client uses it for one fetch."""

    path: str = "/"
    ask: Ask = field(default_factory=Query)
    answer: Answer = field(default_factory=Items)
    request_hook: RequestHook | None = None
    read_hook: ReadHook | None = None

    @property
    def ids_per_request(self) -> int:
        return self.ask.ids_per_request

    @property
    def not_found_is_missing(self) -> bool:
        """A 404 answers "unknown id" (one id per path), not a refusal of the request."""
        return isinstance(self.ask, PerPath)

    def request(self, ids: list[str]) -> HttpRequest:
        if self.request_hook is not None:
            return self.request_hook(ids)
        return self.ask.request(self.path, ids)

    def read(self, body: Any, ids: list[str]) -> SourceResult:
        if self.read_hook is not None:
            return self.read_hook(body, ids)
        return self.answer.read(body, ids)


@dataclass(frozen=True)
class HttpSource:
    """An HTTP API answering a few ids per request; by default the query-string shape,
    `GET {url}{path}?ids=a,b,c` answering `{"items": [{"id": ...}], "missing": [...]}`.

    Other APIs are described, not coded:
    - `ask`: `Query(param, separator, ids_per_request)` (ids in the query string),
      `PostJson(key, ids_per_request)` (a JSON body by POST) or `PerPath()` (one id per
      request, `path="/items/{id}"`; a 404 is an unknown id);
    - `answer`: `Items(at, id_field, missing)` (a list of items; unknown ids listed under
      `missing`, or omitted when `missing=None`) or `Item(at, id_field)` (the body is the
      item: the default for `PerPath`);
    - for anything else, at most two functions: `request(ids) -> HttpRequest` and
      `read(body, ids) -> SourceResult` (keyed by the id strings asked for).

    The base URL and bearer token come from the environment variables named here, so a
    definition holds no secret. Every call waits for a token of the shared bucket
    `rate_bucket`: two backfills calling one API share its rate, different APIs don't.
    Retries, 429 `Retry-After`, timeouts, the overall deadline and the splitting of a
    request that fails for some ids' content (only those ids end up in error) are the
    engine's (backfill_engine/http_client.py), whatever the shape.
    """

    url_env: str
    token_env: str | None = None
    token_required: bool = True  # False: the API answers without a token too
    path: str = "/"
    rate_bucket: str | None = "http"
    keyed_by_string: bool = True
    ask: Ask = field(default_factory=Query)
    answer: Answer | None = None  # None: Items() for a list of ids, Item() for PerPath
    request: RequestHook | None = None
    read: ReadHook | None = None

    def __post_init__(self) -> None:
        per = self.ask.ids_per_request
        if not 1 <= per <= MAX_IDS_PER_REQUEST:
            raise BackfillError(
                f"HttpSource {self.url_env}: ids_per_request must be 1..{MAX_IDS_PER_REQUEST}"
            )
        if (
            isinstance(self.ask, PerPath)
            and self.request is None
            and self.ask.placeholder not in self.path
        ):
            raise BackfillError(
                f"HttpSource {self.url_env}: PerPath needs {self.ask.placeholder} in its path"
            )
        if not self.path.startswith("/"):
            raise BackfillError(f"HttpSource {self.url_env}: path must start with /")

    @property
    def http(self) -> HttpEndpoint:
        """The API it calls, for the engine to build its client."""
        return HttpEndpoint(self.url_env, self.token_env, self.token_required)

    @property
    def shape(self) -> Shape:
        """How it asks and how it reads, for the client."""
        answer = self.answer
        if answer is None:
            answer = Item() if isinstance(self.ask, PerPath) else Items()
        return Shape(self.path, self.ask, answer, self.request, self.read)

    def fetch(self, docs: Sequence[Doc], ctx: SourceContext) -> SourceResult:
        return ctx.http.fetch([d["_id"] for d in docs], self.shape)
