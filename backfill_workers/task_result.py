"""What one delivery of a batch task reports to Flower: a small JSON object, or a one-line reason.

Celery sends `repr(return value)` in the `task-succeeded` event and Flower shows it as
the result; `TaskReport.__repr__` is compact JSON so that column reads as data. A batch
that gave up raises `BatchFailed` (Flower: FAILURE), one re-sent for later raises
Celery's `Retry` around `BatchRetry` (Flower: RETRY); the message is already re-sent by
the engine, so neither raise sends anything.
"""

from __future__ import annotations

import json
from typing import Any

from backfill_engine.redact import redact_text
from backfill_engine.states import COUNTER_NAMES

REASON_MAX_CHARS = 200
# The counters the result shows; `quarantined` is missing + invalid (both go to quarantine).
SHOWN_COUNTERS = ("written", "unchanged", "missing", "invalid")


class BatchFailed(Exception):
    """The batch was marked failed after its last attempt; the message is the reason."""


class BatchRetry(Exception):
    """The batch was handed back and re-sent with backoff; the message is the reason."""


class TaskReport:
    """A delivery's outcome and counters, shown by Flower as compact JSON."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __repr__(self) -> str:
        return json.dumps(self.fields, separators=(",", ":"), default=str)

    def __reduce__(self) -> tuple[Any, ...]:
        # The prefork pool pickles return values back to the parent that sends the event.
        return (TaskReport, (self.fields,))


def one_line(text: str, secrets: tuple[str, ...]) -> str:
    """`text` scrubbed of credentials, on one line, at most REASON_MAX_CHARS."""
    flat = " ".join(redact_text(text, secrets).split())
    return flat if len(flat) <= REASON_MAX_CHARS else flat[: REASON_MAX_CHARS - 1] + "…"


def last_error(batch: dict[str, Any] | None) -> str:
    """The most recent error a batch document records, or ''."""
    if not batch:
        return ""
    errors = batch.get("errors") or []
    if errors:
        return str(errors[-1].get("error") or "")
    return str(batch.get("last_error") or "")


def delivery_report(
    outcome: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    seconds: float,
) -> dict[str, Any]:
    """Counters this delivery added (the batch document after minus before) and its rate."""
    old = (before or {}).get("counters") or {}
    new = (after or {}).get("counters") or {}
    delta = {k: int(new.get(k, 0)) - int(old.get(k, 0)) for k in COUNTER_NAMES}
    processed = int((after or {}).get("processed") or 0) - int((before or {}).get("processed") or 0)
    report: dict[str, Any] = {"outcome": outcome}
    report.update({k: delta[k] for k in SHOWN_COUNTERS})
    report["quarantined"] = delta["missing"] + delta["invalid"]
    if delta["deleted"]:
        report["deleted"] = delta["deleted"]
    report["docs_per_s"] = round(processed / seconds, 1) if seconds > 0 else 0.0
    return report
