"""The migration framework's error family (the migrations helper fills this in)."""


class MigrationError(Exception):
    """Base of every migration error."""
