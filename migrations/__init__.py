"""This project's example scenario: the catalog backfill's dated migrations in `versions/`.

Not the framework (that is `backfill_migrations`, named so that a team's own top-level
`migrations/` package never hides it). The example migrations were written as
`from migrations import Migration, ...` and their source is checksummed in every database
that applied them, so this package keeps those names importable instead of the files
changing.
"""

from pathlib import Path

from backfill_migrations import *  # noqa: F403  (the names the example migrations import)
from backfill_migrations import __all__ as __all__

VERSIONS_DIR = Path(__file__).resolve().parent / "versions"
