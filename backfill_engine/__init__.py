"""mongo-backfill's engine and its public API: write a Backfill, the engine runs it.

A team's module defines one or more `Backfill`s; workers find them through the setting
BACKFILL_IMPORTS or in the migrations directory; a migration runs one with
`orchestrator.backfill_runs.run_backfill(db, MY_BACKFILL, ctx)`.
"""

from backfill_engine.decide import Decision as Decision
from backfill_engine.decide import Outcome as Outcome
from backfill_engine.decide import decide as decide

# Definitions
from backfill_engine.definition import Backfill as Backfill
from backfill_engine.definition import DefinitionError as DefinitionError

# Errors
from backfill_engine.errors import BackfillError as BackfillError
from backfill_engine.payload import InvalidPayloadError as InvalidPayloadError

# Sources
from backfill_engine.sources import CollectionSource as CollectionSource
from backfill_engine.sources import FunctionSource as FunctionSource
from backfill_engine.sources import HttpSource as HttpSource
from backfill_engine.sources import SourceResult as SourceResult

__all__ = [
    "Backfill",
    "BackfillError",
    "CollectionSource",
    "Decision",
    "DefinitionError",
    "FunctionSource",
    "HttpSource",
    "InvalidPayloadError",
    "Outcome",
    "SourceResult",
    "decide",
]
