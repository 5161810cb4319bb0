"""The end of every fault scenario: prove, from the data, that nothing was lost or doubled.

`reconcile` checks the invariants every scenario must keep and returns the measured
numbers that `docs/reliability.md` reports:

- planning: batch numbers run 0..N-1 and every expected id is in exactly one batch
  (none missed, none planned twice);
- batches: every batch is done, `processed == size` and its counters add up to its size;
- products: every id holds exactly the stand-in's values, unless it is accounted for as
  quarantined (by this job) or deleted while the job ran;
- counters: `written` never exceeds the products that needed a write (a product counted
  as written twice means two workers wrote one batch: forbidden);
- `verify` recomputes every batch hash from products and finds no mismatch.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from backfill_engine.states import BATCH_IDS, COUNTER_NAMES, METADATA, QUARANTINE
from backfill_engine.store import load_batch_ids
from catalog_service.data import expected_fields
from migrations.versions._catalog import PRODUCTS
from orchestrator.verify import verify
from tests.catalog_definition import SYNCED_AT_FIELD
from tests.harness import System

FIELDS = ("brand", "category", "gtin", "weight_grams")
READ_CHUNK = 100  # ids per `$in`: SecantusDB answers long `$in` lists in superlinear time


@dataclass
class Reconciliation:
    """What a finished job did, measured from MongoDB and the stand-in's counters."""

    job_id: str
    status: str
    products: int  # ids the job covered
    batches: int
    enriched: int  # products holding exactly the stand-in's values
    quarantined: int
    deleted: int
    lost: int  # neither right nor accounted for: must be 0
    written_twice: int  # `written` beyond the products that needed a write: must be 0
    refetched: int  # ids the stand-in served more than once (allowed after an interruption)
    verify_ok: bool
    counters: dict[str, int] = field(default_factory=dict)
    wrong_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("wrong_ids")
        return out


def refetch_count(system: System, ids: Iterable[Any]) -> int:
    """How many extra times the stand-in was asked for these ids (since its last reset)."""
    counts: dict[str, int] = system.stats()["id_counts"]
    return sum(max(0, counts.get(str(i), 0) - 1) for i in ids)


def reconcile(
    system: System,
    job_id: str,
    ids: list[Any],
    *,
    status: str = "completed",
    deleted: Collection[Any] = (),
    needed_writes: int | None = None,
    seed: int = 0,
    count_refetches: bool = True,
    failed_batches: Collection[int] = (),
) -> Reconciliation:
    """Check the job against the data; AssertionError names the first broken invariant.

    `failed_batches` are batch numbers the scenario expects to end `failed`: they must,
    and their ids are left out of the product checks (a failed batch may be half written).
    """
    db = system.db
    meta, products = db[METADATA], db[PRODUCTS]
    job = meta.find_one({"_id": job_id, "kind": "job"})
    assert job is not None, f"no job {job_id}"
    assert job["status"] == status, f"job {job_id} is {job['status']}, expected {status}"

    batches = list(meta.find({"kind": "batch", "job_id": job_id}).sort("batch_no", 1))
    assert [b["batch_no"] for b in batches] == list(range(len(batches))), "batch numbers have gaps"
    planned: list[Any] = []
    for b in batches:
        planned += load_batch_ids(db[BATCH_IDS], b["_id"])
    assert len(planned) == len(set(planned)), "an id was planned in two batches"
    assert set(planned) == set(ids), (
        f"planned {len(set(planned))} ids, expected {len(ids)}: "
        f"{len(set(ids) - set(planned))} missed, {len(set(planned) - set(ids))} extra"
    )
    assert job["planning"]["done"] and job["planning"]["items"] == len(ids)

    totals = dict.fromkeys(COUNTER_NAMES, 0)
    given_up: set[Any] = set()
    for b in batches:
        if b["batch_no"] in failed_batches:
            assert b["status"] == "failed", f"batch {b['batch_no']} is {b['status']}, not failed"
            given_up.update(load_batch_ids(db[BATCH_IDS], b["_id"]))
            continue
        assert b["status"] == "done", f"batch {b['batch_no']} is {b['status']}"
        assert b["processed"] == b["size"], f"batch {b['batch_no']} stopped at {b['processed']}"
        assert sum(b["counters"].values()) == b["size"], (
            f"batch {b['batch_no']} counters {b['counters']} do not add up to {b['size']}"
        )
        for name in COUNTER_NAMES:
            totals[name] += int(b["counters"][name])

    held = {d["item_id"] for d in db[QUARANTINE].find({"job_id": job_id}, {"item_id": 1})}
    held -= given_up
    gone = set(deleted)
    assert held <= set(ids), "quarantine holds ids outside the job"
    assert totals["missing"] + totals["invalid"] == len(held), (totals, len(held))
    assert totals["deleted"] == len(gone), (totals, len(gone))

    docs: dict[Any, dict[str, Any]] = {}
    for start in range(0, len(ids), READ_CHUNK):
        docs.update(
            (d["_id"], d) for d in products.find({"_id": {"$in": ids[start : start + READ_CHUNK]}})
        )
    enriched = 0
    wrong: list[str] = []
    for pid in ids:
        if pid in given_up:
            continue
        if pid in gone:
            assert pid not in docs, f"deleted product {pid} came back"
            continue
        doc = docs.get(pid)
        if pid in held:
            continue
        want = expected_fields(str(pid), seed)
        if doc is not None and SYNCED_AT_FIELD in doc and {f: doc.get(f) for f in FIELDS} == want:
            enriched += 1
        else:
            wrong.append(str(pid))
    needed = len(ids) - len(held) - len(gone) - len(given_up)
    needed = needed if needed_writes is None else needed_writes
    report = Reconciliation(
        job_id=job_id,
        status=job["status"],
        products=len(ids),
        batches=len(batches),
        enriched=enriched,
        quarantined=len(held),
        deleted=len(gone),
        lost=len(wrong),
        written_twice=max(0, totals["written"] - needed),
        refetched=refetch_count(system, ids) if count_refetches else 0,
        verify_ok=verify(db, job_id).ok,
        counters=totals,
        wrong_ids=wrong[:20],
    )
    assert report.lost == 0, f"{report.lost} products lost or wrong, e.g. {report.wrong_ids}"
    assert report.written_twice == 0, f"written {totals['written']} > needed {needed}"
    assert report.verify_ok, "verify found a batch whose hash differs from products"
    return report


def wait_sweeping(
    system: System, job_id: str, predicate: Any, *, timeout: float = 120.0, what: str = ""
) -> None:
    """wait_until, while sweeping the job as `backfill run --wait` would (lost work comes back)."""
    from backfill_engine.sweeper import sweep_job

    def swept() -> bool:
        sweep_job(
            system.db,
            system.broker.sender,
            system.settings.queue,
            job_id,
            redispatch_seconds=system.settings.redispatch_seconds,
            broker=system.broker.redis,
        )
        return bool(predicate())

    system.wait_until(swept, timeout=timeout, what=what or "condition (sweeping)")
