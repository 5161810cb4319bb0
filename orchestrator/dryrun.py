"""`run --dry-run`: fetch a sample, compute the would-be writes, write nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from workers.catalog_client import CatalogClient, CatalogProtocolError
from workers.enrich import CATALOG_BACKFILL, InvalidPayloadError, diff_fields
from workers.states import PRODUCTS

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
    db: Database, catalog: CatalogClient, *, sample: int = DEFAULT_SAMPLE, chunk: int = 100
) -> DryRunReport:
    """Diff the first `sample` products (by `_id`) against the catalog without writing."""
    backfill = CATALOG_BACKFILL
    report = DryRunReport()
    docs = list(
        db[PRODUCTS].find({}, dict.fromkeys(backfill.fields, 1)).sort("_id", 1).limit(sample)
    )
    for start in range(0, len(docs), chunk):
        part = {d["_id"]: d for d in docs[start : start + chunk]}
        ids = list(part)
        try:
            result = catalog.fetch(ids)
        except CatalogProtocolError:
            report.sampled += len(ids)
            report.invalid += len(ids)
            continue
        for pid in ids:
            report.sampled += 1
            if pid in result.missing:
                report.missing += 1
                continue
            payload = result.items.get(pid)
            try:
                if payload is None:
                    raise InvalidPayloadError("no item in response")
                desired = backfill.map(payload)
            except InvalidPayloadError:
                report.invalid += 1
                continue
            diff = diff_fields(part[pid], desired)
            if diff:
                report.changed += 1
                for name in diff:
                    report.fields_changed[name] = report.fields_changed.get(name, 0) + 1
                if len(report.examples) < 3:
                    report.examples.append({"_id": str(pid), "set": diff})
            else:
                report.unchanged += 1
    return report
