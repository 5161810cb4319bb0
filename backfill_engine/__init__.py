"""mongo-backfill's engine and its public API: write a Backfill, the engine runs it.

A team's module defines one or more `Backfill`s; workers find them through the setting
BACKFILL_IMPORTS or in the migrations directory; a migration runs one with
`orchestrator.backfill_runs.run_backfill(db, MY_BACKFILL, ctx)`.

A source is a `FunctionSource`, a `CollectionSource`, an `HttpSource` shaped to its API
(`Query`/`PostJson`/`PerPath` to ask, `Items`/`Item` to read), or a class of the team's
own (the `Source` protocol) that declares `http = HttpEndpoint(...)` to be handed the
engine's HTTP client as `ctx.http` (a `SourceHttp`).
"""

from backfill_engine.decide import Decision as Decision
from backfill_engine.decide import Outcome as Outcome
from backfill_engine.decide import decide as decide

# Definitions
from backfill_engine.definition import Backfill as Backfill
from backfill_engine.definition import DefinitionError as DefinitionError

# Errors; the HTTP client a custom source gets as `ctx.http` (SourceHttp) and its errors
from backfill_engine.errors import BackfillError as BackfillError
from backfill_engine.http_client import HttpAnswer as HttpAnswer
from backfill_engine.http_client import SourceAuthError as SourceAuthError
from backfill_engine.http_client import SourceError as SourceError
from backfill_engine.http_client import SourceHttp as SourceHttp
from backfill_engine.http_client import SourceProtocolError as SourceProtocolError
from backfill_engine.http_client import SourceRefused as SourceRefused
from backfill_engine.http_client import SourceUnavailableError as SourceUnavailableError
from backfill_engine.ids import id_string as id_string
from backfill_engine.payload import InvalidPayloadError as InvalidPayloadError

# Sources; HttpSource's shapes: how to ask (Query, PostJson, PerPath), how to read (Items, Item)
from backfill_engine.sources import CollectionSource as CollectionSource
from backfill_engine.sources import FunctionSource as FunctionSource
from backfill_engine.sources import HttpEndpoint as HttpEndpoint
from backfill_engine.sources import HttpRequest as HttpRequest
from backfill_engine.sources import HttpSource as HttpSource
from backfill_engine.sources import Item as Item
from backfill_engine.sources import Items as Items
from backfill_engine.sources import PerPath as PerPath
from backfill_engine.sources import PostJson as PostJson
from backfill_engine.sources import Query as Query
from backfill_engine.sources import Shape as Shape
from backfill_engine.sources import Source as Source
from backfill_engine.sources import SourceContext as SourceContext
from backfill_engine.sources import SourceResult as SourceResult

__all__ = [
    "Backfill",
    "BackfillError",
    "CollectionSource",
    "Decision",
    "DefinitionError",
    "FunctionSource",
    "HttpAnswer",
    "HttpEndpoint",
    "HttpRequest",
    "HttpSource",
    "InvalidPayloadError",
    "Item",
    "Items",
    "Outcome",
    "PerPath",
    "PostJson",
    "Query",
    "Shape",
    "Source",
    "SourceAuthError",
    "SourceContext",
    "SourceError",
    "SourceHttp",
    "SourceProtocolError",
    "SourceRefused",
    "SourceResult",
    "SourceUnavailableError",
    "decide",
    "id_string",
]
