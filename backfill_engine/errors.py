"""The engine's error family; each message reads well as the one line the CLI prints."""

from __future__ import annotations


class BackfillError(Exception):
    """Base of every error the backfill tool reports to a user."""
