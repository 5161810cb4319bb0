"""What happens to one document of a sub-chunk: one pure function, shared by the batch run,
dry-run and verify, so the three can never disagree about what a backfill would write."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from backfill_engine import paths
from backfill_engine.definition import Backfill
from backfill_engine.ids import id_string
from backfill_engine.payload import InvalidPayloadError, diff_fields, payload_snapshot
from backfill_engine.sources import SourceResult
from backfill_engine.validate import validate_payload


class Outcome(StrEnum):
    WRITE = "write"  # the document lacks or differs in some whitelisted field
    UNCHANGED = "unchanged"  # it already holds exactly what the source says
    MISSING = "missing"  # the source has nothing for it (quarantined)
    INVALID = "invalid"  # the source's answer failed validation (quarantined)
    AMBIGUOUS = "ambiguous"  # another id travels as the same string (quarantined)
    DELETED = "deleted"  # the document is gone since planning


QUARANTINED = (Outcome.MISSING, Outcome.INVALID, Outcome.AMBIGUOUS)


@dataclass(frozen=True)
class Decision:
    """The outcome for one id, the validated fields, the `$set` diff, and why it was held."""

    outcome: Outcome
    fields: Mapping[str, Any] = field(default_factory=dict)
    diff: Mapping[str, Any] = field(default_factory=dict)
    error_class: str | None = None
    error: str | None = None
    snapshot: str | None = None

    def quarantine_entry(self, pid: Any, http_status: int | None) -> dict[str, Any]:
        """The backfill_quarantine record for a held decision."""
        return {
            "item_id": pid,
            "reason": self.outcome.value,
            "error_class": self.error_class,
            "error": (self.error or "")[:500],
            "http_status": http_status,
            "payload_snapshot": self.snapshot,
        }


def decide(
    backfill: Backfill,
    pid: Any,
    current: Mapping[str, Any] | None,
    answer: SourceResult,
    *,
    ambiguous: bool = False,
) -> Decision:
    """Decide the fate of document `pid` (None: deleted) given the source's `answer`."""
    if current is None:
        return Decision(Outcome.DELETED)
    if ambiguous:
        return Decision(
            Outcome.AMBIGUOUS,
            error_class="AmbiguousId",
            error=f"another _id of this job has the same string form {id_string(pid)!r}: "
            "the source cannot tell them apart",
        )
    if pid in answer.missing:
        return Decision(
            Outcome.MISSING, error_class="NotInSource", error="the source has no item for this id"
        )
    payload = answer.items.get(pid)
    try:
        if payload is None:
            raise InvalidPayloadError(answer.errors.get(pid, "no item in response"))
        fields = validate_payload(payload, backfill.writes, backfill.check)
    except InvalidPayloadError as exc:
        return Decision(
            Outcome.INVALID,
            error_class=type(exc).__name__,
            error=str(exc),
            snapshot=payload_snapshot(payload),
        )
    for name in fields:
        blocked = paths.blocked_parent(current, name) if "." in name else None
        if blocked is not None:
            # MongoDB refuses a `$set` inside it, and the error would fail the sub-chunk's
            # whole bulk write: this one document is held instead, and the value stays.
            return Decision(
                Outcome.INVALID,
                error_class="ParentNotDocument",
                error=f"{blocked[0]} is {blocked[1]}, not a document: cannot set {name}",
                snapshot=payload_snapshot(payload),
            )
    diff = diff_fields(current, fields)
    return Decision(Outcome.WRITE if diff else Outcome.UNCHANGED, fields=fields, diff=diff)
