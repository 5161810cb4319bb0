"""The orchestrator's error family; each message reads well as the one line the CLI prints."""

from __future__ import annotations

from typing import Any

from backfill_engine.errors import BackfillError as BackfillError


class StackError(BackfillError):
    """An embedded server could not be started or reached."""


class ServerUnreachableError(BackfillError):
    """MongoDB, Redis or an HTTP source does not answer; `url` is already redacted."""

    def __init__(self, what: str, url: str, detail: str = "") -> None:
        self.what, self.url = what, url
        tail = f": {detail}" if detail else ""
        super().__init__(f"{what} unreachable at {url}{tail}")


class JobNotFoundError(BackfillError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no backfill job {job_id!r} (see `backfill jobs`)")


class JobStateError(BackfillError):
    """A control verb does not apply to the job in its current state."""

    def __init__(self, job_id: str, status: str, verb: str) -> None:
        self.job_id, self.status, self.verb = job_id, status, verb
        super().__init__(f"cannot {verb} job {job_id}: it is {status}")


class UnknownBackfillError(BackfillError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown backfill {name!r}; known: {', '.join(known)}")


def mongo_error_line(exc: Exception) -> str:
    """A driver error as one short line: the server's message, not its whole reply.

    `BulkWriteError` and `OperationFailure` print their full reply after the message (a
    rejected bulk insert: every failed document); the first write error stands for them.
    """
    details: Any = getattr(exc, "details", None)
    errors = details.get("writeErrors") if isinstance(details, dict) else None
    if errors:
        first = errors[0]
        more = f"; {len(errors):,} documents rejected" if len(errors) > 1 else ""
        return f"{first.get('errmsg', 'write error')} (code {first.get('code')}{more})"[:300]
    return first_line(exc, str(exc).split(", full error:")[0])


def first_line(exc: Exception, text: str | None = None) -> str:
    """The first line of `text` (the exception's own by default), at most 300 characters;
    the exception's type name when there is none."""
    lines = (str(exc) if text is None else text).splitlines()
    return (lines or [type(exc).__name__])[0][:300]
