"""`run --dry-run`: ask the source about a sample, decide as workers would, write nothing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from backfill_engine.decide import Outcome, decide
from backfill_engine.definition import Backfill
from backfill_engine.http_client import SourceProtocolError
from backfill_engine.sources import SourceContext, SourceResult

DEFAULT_SAMPLE = 500


@dataclass
class DryRunReport:
    sampled: int = 0
    changed: int = 0
    unchanged: int = 0
    missing: int = 0
    invalid: int = 0
    fields_changed: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("sampled", "changed", "unchanged", "missing", "invalid", "fields_changed")
        }


def dry_run(
    db: Database,
    backfill: Backfill,
    ctx: SourceContext,
    *,
    sample: int = DEFAULT_SAMPLE,
    scope: Mapping[str, Any] | None = None,
) -> DryRunReport:
    """Decide the first `sample` documents in scope (by `_id`) without writing anything."""
    report = DryRunReport()
    query = scope if scope is not None else backfill.query
    docs = list(
        db[backfill.collection].find(query, backfill.projection).sort("_id", 1).limit(sample)
    )
    chunk = backfill.subchunk_size
    for start in range(0, len(docs), chunk):
        part = docs[start : start + chunk]
        try:
            answer = backfill.source.fetch(part, ctx)
        except SourceProtocolError as exc:
            answer = SourceResult.all_invalid([d["_id"] for d in part], str(exc), exc.status)
        for doc in part:
            report.sampled += 1
            decision = decide(backfill, doc["_id"], doc, answer)
            if decision.outcome is Outcome.WRITE:
                report.changed += 1
                for name in decision.diff:
                    report.fields_changed[name] = report.fields_changed.get(name, 0) + 1
                if len(report.examples) < 3:
                    report.examples.append({"_id": str(doc["_id"]), "set": dict(decision.diff)})
            elif decision.outcome is Outcome.UNCHANGED:
                report.unchanged += 1
            elif decision.outcome is Outcome.MISSING:
                report.missing += 1
            else:
                report.invalid += 1
    return report
