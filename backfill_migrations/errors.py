"""The migration error family; each message reads well as the one line the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence


class MigrationError(Exception):
    """Base of every migration error."""


# Registry


class MigrationNilError(MigrationError):
    """`register(None)`: there is no migration to register."""

    def __init__(self) -> None:
        super().__init__("cannot register a nil migration (got None)")


class InvalidVersionFormatError(MigrationError):
    """A version is not `YYYYMMDD[_slug]` with a real date and a lower-case slug."""

    def __init__(self, version: str, reason: str = "") -> None:
        self.version = version
        why = reason or "expected YYYYMMDD or YYYYMMDD_slug with slug in [a-z0-9_]"
        super().__init__(f"invalid migration version {version!r}: {why}")


class InvalidDescriptionError(MigrationError):
    """A description that would not stay one line of the generated module."""

    def __init__(self, char: str) -> None:
        self.char = char
        super().__init__(
            "migration description must be one line without control characters, "
            f"found U+{ord(char):04X}"
        )


class MigrationRegisteredError(MigrationError):
    """Two migrations claim the same version."""

    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(f"migration {version} is already registered")


class InvalidMigrationError(MigrationError):
    """A migration module cannot be loaded or does not follow the module convention."""

    def __init__(self, where: str, reason: str) -> None:
        self.where, self.reason = where, reason
        super().__init__(f"invalid migration {where}: {reason}")


# Planning


class UnknownTargetError(MigrationError):
    """A version given by the user (`--to`, `mark-applied`) names no known migration."""

    def __init__(self, target: str, known: Sequence[str] = ()) -> None:
        self.target = target
        hint = f" (newest known: {known[-1]})" if known else " (no migrations found)"
        super().__init__(f"unknown migration version {target!r}{hint}")


class MigrationBlockedError(MigrationError):
    """A failed or interrupted migration must be retried or marked applied first."""

    def __init__(self, version: str, state: str, error: str | None) -> None:
        self.version, self.state, self.error = version, state, error
        detail = f" ({error})" if error else ""
        super().__init__(
            f"migration {version} is {state}{detail}; fix it, then run "
            f"`migrate up --retry` or `migrate mark-applied {version}`"
        )


class MissingMigrationFileError(MigrationError):
    """History names a version whose module is gone, and the verb needs its code."""

    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(f"migration {version} is recorded in history but its module is missing")


class NoMigrationsDirError(MigrationError):
    """A verb was asked to run with no migrations directory configured."""

    def __init__(self, how: str = "") -> None:
        super().__init__("no migrations directory is configured" + (f"; {how}" if how else ""))


# Running


class MigrationFailedError(MigrationError):
    """A migration's up() or down() raised; the run stopped after recording it `failed`."""

    def __init__(self, version: str, direction: str, error: str, done: Sequence[str] = ()) -> None:
        self.version, self.direction, self.error = version, direction, error
        self.done = list(done)
        super().__init__(f"migration {version} failed during {direction}: {error}")


class PreconditionFailedError(MigrationError):
    """A migration refuses to run because the data is not ready for it."""


class LockError(MigrationError):
    """Base of the runner-lock errors."""


class LockTimeoutError(LockError):
    """Another runner held the lock for longer than we were willing to wait."""

    def __init__(self, host: str, pid: int | None, waited: float, expires_at: str) -> None:
        self.host, self.pid, self.waited = host, pid, waited
        super().__init__(
            f"migration lock is held by {host} pid {pid} (lease until {expires_at}); "
            f"gave up after waiting {waited:g}s"
        )


class LockLostError(LockError):
    """Our lease expired or was taken over; we stop before writing anything else."""

    def __init__(self, detail: str = "") -> None:
        tail = f" {detail}" if detail else ""
        super().__init__(
            f"migration lock lost (lease expired or taken over by another runner);{tail} "
            "stopped without writing further history"
        )
