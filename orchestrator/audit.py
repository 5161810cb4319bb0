"""Who changed a job, when, from which command line, with which parameters.

Every verb that changes a job (run, pause, resume, cancel, retry, set) appends one entry
to the job's `audit` array through `record` (via orchestrator.job_events.changed), newest
last, keeping the last AUDIT_KEEP: this is the only writer of the trail, so every entry
names its verb and carries a redacted command line. `status` shows the
last few, `status --json` all of them.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
import re
import socket
import sys
from collections.abc import Sequence
from typing import Any

import pymongo.errors
from pymongo.database import Database

from backfill_engine import clock
from backfill_engine.redact import REDACTED, redact_text
from backfill_engine.states import METADATA

log = logging.getLogger(__name__)

AUDIT_KEEP = 200
SHOWN_IN_STATUS = 5
ARG_MAX_CHARS = 300
# `--token X`, `--password=X`, `KEY=X` with a secret-sounding KEY: X never lands in the audit.
_SECRET_NAME = re.compile(r"(pass|pwd|token|secret|api[-_]?key|auth|credential)", re.IGNORECASE)


def who() -> str:
    """The OS user running this command (the numeric uid when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def redact_argv(argv: Sequence[str], secrets: tuple[str, ...] = ()) -> list[str]:
    """`argv` with credentials scrubbed: URL passwords, secret query values, secret options."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, sep, _value = arg.partition("=")
        if arg.startswith("-") and _SECRET_NAME.search(name):
            out.append(f"{name}={REDACTED}" if sep else arg)
            hide_next = not sep
            continue
        if sep and _SECRET_NAME.search(name):
            out.append(f"{name}={REDACTED}")
            continue
        out.append(redact_text(arg, secrets)[:ARG_MAX_CHARS])
    return out


def _plain(value: Any) -> Any:
    """Parameters as BSON can store them (tuples become lists, other objects text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str, dt.datetime)):
        return value
    return str(value)


def entry(verb: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One audit entry for `verb` run by this process now."""
    return {
        "at": clock.now(),
        "verb": verb,
        "user": who(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        # The program's name, not where it is installed.
        "argv": redact_argv([os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv else []),
        "params": _plain(params or {}),
    }


def record(db: Database, job_id: str, verb: str, params: dict[str, Any] | None = None) -> None:
    """Append who ran `verb` on `job_id` to its audit trail; a failure is logged, never raised.

    The change itself has already happened: losing its audit line must not turn it into
    an error the operator would retry.
    """
    try:
        db[METADATA].update_one(
            {"_id": job_id, "kind": "job"},
            {"$push": {"audit": {"$each": [entry(verb, params)], "$slice": -AUDIT_KEEP}}},
        )
    except pymongo.errors.PyMongoError as exc:
        log.warning("job %s: %s not audited (%s)", job_id, verb, type(exc).__name__)


def set_changes(e: dict[str, Any]) -> dict[str, Any] | None:
    """What a `backfill set` entry changed, {field: {"from": old, "to": new}}; None for other
    verbs. Entries of earlier releases kept it under `changes`, with no verb."""
    if e.get("verb") == "set":
        return dict(e.get("params") or {})
    return e.get("changes") if e.get("verb") is None else None


def _shown(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"from", "to"}:
        return f"{value['from']} -> {value['to']}"
    return str(value)


def recent_lines(job: dict[str, Any], n: int = SHOWN_IN_STATUS) -> list[str]:
    """The last `n` audit entries of `job`, one line each, oldest first."""
    lines = []
    for e in (job.get("audit") or [])[-n:]:
        at = e.get("at")
        when = at.strftime("%Y-%m-%d %H:%M:%S") if isinstance(at, dt.datetime) else "?"
        changes = set_changes(e)
        verb = e.get("verb") or ("set" if changes else "?")
        shown = changes if changes is not None else (e.get("params") or {})
        params = ", ".join(f"{k}={_shown(v)}" for k, v in shown.items())
        line = f"{when}  {verb} by {e.get('user')}@{e.get('host')}"
        lines.append(f"{line}  ({params})" if params else line)
    return lines
