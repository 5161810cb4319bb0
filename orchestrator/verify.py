"""Recompute each finished batch's payload hash from what its documents hold now."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from backfill_engine import paths
from backfill_engine.batch_run import read_current
from backfill_engine.definition import Backfill
from backfill_engine.payload import CHAIN_START, chain_hash, item_digest
from backfill_engine.registry import lookup
from backfill_engine.settings import DEFAULT_SUBCHUNK_SIZE
from backfill_engine.states import BATCH_IDS, METADATA, QUARANTINE, BatchStatus
from backfill_engine.store import load_batch_ids
from orchestrator.jobs import get_job

# Ids per `$in`: the sub-chunk the workers read by default.
VERIFY_READ_CHUNK = DEFAULT_SUBCHUNK_SIZE


@dataclass
class VerifyReport:
    job_id: str
    batches_checked: int = 0
    documents_checked: int = 0
    mismatched_batches: list[int] = field(default_factory=list)
    skipped_batches: int = 0  # not done (failed, cancelled, pending): nothing to compare

    @property
    def ok(self) -> bool:
        return not self.mismatched_batches


def batch_hash_from_documents(
    db: Database, batch: dict[str, Any], skip: set[Any], backfill: Backfill, per_read: int = 0
) -> tuple[str | None, int]:
    """The payload hash a batch would have if it wrote exactly what the documents hold now."""
    all_ids = load_batch_ids(db[BATCH_IDS], batch["_id"])
    ids = all_ids[: int(batch.get("processed") or 0)]
    h: str | None = None
    checked = 0
    for start in range(0, len(ids), VERIFY_READ_CHUNK):
        chunk = ids[start : start + VERIFY_READ_CHUNK]
        current = read_current(db[backfill.collection], chunk, backfill.writes, per_read=per_read)
        for pid in chunk:
            if pid in skip or pid not in current:
                continue
            fields = {name: paths.get(current[pid], name) for name in backfill.writes}
            h = chain_hash(h or CHAIN_START, item_digest(pid, fields))
            checked += 1
    return h, checked


def verify(
    db: Database,
    job_id: str,
    definitions: dict[str, Backfill] | None = None,
    *,
    per_read: int = 0,
) -> VerifyReport:
    """Compare every done batch's recorded hash with one recomputed from the documents.

    `per_read` is BACKFILL_READ_IDS: the most ids one read of the documents names.
    """
    if definitions is None:
        from backfill_engine.runtime import worker_definitions
        from backfill_engine.settings import Settings

        definitions = worker_definitions(Settings.from_env())
    backfill = lookup(definitions, str(get_job(db, job_id)["backfill"]))
    report = VerifyReport(job_id)
    skip = {d["item_id"] for d in db[QUARANTINE].find({"job_id": job_id}, {"item_id": 1})}
    for batch in db[METADATA].find({"job_id": job_id}).sort("batch_no", 1):
        if batch["status"] != BatchStatus.DONE.value:
            report.skipped_batches += 1
            continue
        recomputed, checked = batch_hash_from_documents(db, batch, skip, backfill, per_read)
        report.batches_checked += 1
        report.documents_checked += checked
        if recomputed != batch.get("payload_hash"):
            report.mismatched_batches.append(int(batch["batch_no"]))
    return report
