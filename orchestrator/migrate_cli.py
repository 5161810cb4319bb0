"""`backfill migrate ...` (placeholder until the migration runner lands)."""

import click


@click.group()
def migrate() -> None:
    """Apply, roll back and inspect schema migrations."""
