"""One table says which job and batch status changes exist, and store.py alone makes them.

The source checks read every module with `ast`; the table checks drive each store
transition from every state on the real server and compare what moved with the table.
"""

from __future__ import annotations

import ast
import itertools
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo.collection import Collection
from pymongo.database import Database

from backfill_engine import store
from backfill_engine.states import (
    METADATA,
    QUARANTINE,
    TERMINAL_JOB_STATES,
    BatchStatus,
    JobStatus,
)
from backfill_engine.store import Lease
from backfill_engine.transitions import (
    BATCH_TRANSITIONS,
    FINAL_BATCH_STATES,
    FINAL_JOB_STATES,
    JOB_TRANSITIONS,
    TransitionError,
    allowed,
    batch_guard,
    job_guard,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("backfill_engine", "orchestrator", "backfill_workers", "backfill_migrations")
STORE = ROOT / "backfill_engine" / "store.py"
UPDATE_CALLS = {"update_one", "update_many", "find_one_and_update", "UpdateOne", "UpdateMany"}
OWNER = "worker-a"


# --- who writes `status` -------------------------------------------------------------------


def _called(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _keys(node: ast.Dict) -> set[Any]:
    return {k.value for k in node.keys if isinstance(k, ast.Constant)}


def _names_status(node: ast.AST) -> bool:
    return any(isinstance(d, ast.Dict) and "status" in _keys(d) for d in ast.walk(node))


def _update_arg(call: ast.Call) -> ast.expr | None:
    """The update document of an update call: its second argument (the first is the filter)."""
    if len(call.args) > 1:
        return call.args[1]
    return next((kw.value for kw in call.keywords if kw.arg in ("update", "document")), None)


def status_writes(source: str) -> list[int]:
    """Lines that build an update setting `status`: a `$set` literal holding the key, or an
    update call whose update document (not its filter) names it."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "$set"
                    and isinstance(value, ast.Dict)
                    and "status" in _keys(value)
                ):
                    lines.add(node.lineno)
        elif isinstance(node, ast.Call) and _called(node.func) in UPDATE_CALLS:
            update = _update_arg(node)
            if update is not None and _names_status(update):
                lines.add(node.lineno)
    return sorted(lines)


def test_the_status_write_check_flags_writes_and_not_reads_or_filters() -> None:
    writes = textwrap.dedent(
        """
        meta.update_one({"_id": j}, {"$set": {"status": "paused"}})
        update = {"$set": {"status": s, "x": 1}}
        meta.update_many({"job_id": j}, update={"$set": {"status": "cancelled"}})
        meta.find_one_and_update({"_id": j}, {"$set": dict(a=1), "status": 2})
        """
    )
    assert status_writes(writes) == [2, 3, 4, 5]
    reads = textwrap.dedent(
        """
        meta.find_one({"_id": j, "status": "running"}, {"status": 1})
        meta.count_documents({"job_id": j, "status": {"$in": ["queued"]}})
        meta.update_one({"_id": j, "status": "running"}, {"$set": {"rate": 5}})
        meta.update_many({"status": {"$in": states}}, {"$inc": {"n": 1}})
        meta.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        notice = {"job_id": j, "status": job.get("status")}
        """
    )
    assert status_writes(reads) == []


def test_only_store_writes_a_job_or_batch_status() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == STORE:
                continue
            found += [f"{path.relative_to(ROOT)}:{n}" for n in status_writes(path.read_text())]
    assert not found, f"status written outside backfill_engine/store.py: {found}"


def test_every_status_write_in_store_is_guarded_through_the_table() -> None:
    tree = ast.parse(STORE.read_text())
    unguarded, spelled = [], []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef) or not status_writes(ast.unparse(fn)):
            continue
        if fn.name in ("new_job", "new_batch"):
            continue  # a new document's first state, inserted, not an update
        calls = {_called(c.func) for c in ast.walk(fn) if isinstance(c, ast.Call)}
        if not calls & {"job_guard", "batch_guard"}:
            unguarded.append(fn.name)
        spelled += [
            f"{fn.name}:{call.lineno}"
            for call in ast.walk(fn)
            if isinstance(call, ast.Call)
            and _called(call.func) in UPDATE_CALLS
            and call.args
            and _names_status(call.args[0])
        ]
    assert not unguarded, f"status written without job_guard/batch_guard: {unguarded}"
    assert not spelled, f"a status filter spelled out instead of taken from the table: {spelled}"


# --- the table itself ----------------------------------------------------------------------


def test_the_table_covers_every_state_and_only_cancelled_done_are_final() -> None:
    assert set(JOB_TRANSITIONS) == set(JobStatus)
    assert set(BATCH_TRANSITIONS) == set(BatchStatus)
    assert all(t in JobStatus for out in JOB_TRANSITIONS.values() for t in out)
    assert all(t in BatchStatus for out in BATCH_TRANSITIONS.values() for t in out)
    assert FINAL_JOB_STATES == (JobStatus.CANCELLED,)
    assert set(FINAL_BATCH_STATES) == {BatchStatus.DONE, BatchStatus.CANCELLED}
    # An ended job leaves only by a retry reopening it.
    for state in TERMINAL_JOB_STATES:
        assert set(JOB_TRANSITIONS[state]) <= {JobStatus.RUNNING}, state
    assert all(reason.strip() for out in JOB_TRANSITIONS.values() for reason in out.values())


def test_a_guard_for_a_change_the_table_lacks_cannot_be_built() -> None:
    for source, target in itertools.product(JobStatus, JobStatus):
        if not allowed(source, target):
            with pytest.raises(TransitionError):
                job_guard(target, source)
    for source, target in itertools.product(BatchStatus, BatchStatus):
        if not allowed(source, target):
            with pytest.raises(TransitionError):
                batch_guard(target, source)
    assert not allowed(JobStatus.RUNNING, BatchStatus.DONE)


def test_a_guard_matches_only_the_states_the_table_lets_move(db: Database) -> None:
    coll = db[METADATA]
    coll.insert_many(
        [{"_id": f"job:{s.value}", "kind": "job", "status": s.value} for s in JobStatus]
    )
    coll.insert_many(
        [{"_id": f"b:{s.value}", "kind": "batch", "status": s.value} for s in BatchStatus]
    )
    for kind, states, guard, table in (
        ("job", JobStatus, job_guard, JOB_TRANSITIONS),
        ("batch", BatchStatus, batch_guard, BATCH_TRANSITIONS),
    ):
        for target in states:
            hit = {d["status"] for d in coll.find({"kind": kind, **guard(target)})}
            want = {s.value for s, out in table.items() if target in out}
            assert hit == want, (kind, target)
            # An update with that guard moves nothing that the table does not let move.
            res = coll.update_many(
                {"kind": kind, **guard(target)},
                {"$set": {"touched": target.value}},
            )
            assert res.matched_count == len(want)
    for final in (*FINAL_JOB_STATES, *FINAL_BATCH_STATES):
        prefix = "job" if isinstance(final, JobStatus) else "b"
        assert "touched" not in coll.find_one({"_id": f"{prefix}:{final.value}"})


# --- what store.py does, from every state ----------------------------------------------------

JobOp = Callable[[Collection, Collection, str], object]
BatchOp = Callable[[Collection, str, str], object]

JOB_OPS: dict[str, JobOp] = {
    "finish_planning": lambda meta, _q, j: store.finish_planning(meta, j),
    "pause_job": lambda meta, _q, j: store.pause_job(meta, j, "operator"),
    "pause_job_for": lambda meta, _q, j: store.pause_job_for(meta, j, "401"),
    "resume_job": lambda meta, _q, j: store.resume_job(meta, j),
    "cancel_job": lambda meta, _q, j: store.cancel_job(meta, j),
    "fail_job": lambda meta, _q, j: store.fail_job(meta, j, "cannot plan"),
    "maybe_complete_job": lambda meta, q, j: store.maybe_complete_job(meta, q, j),
    "reopen_job": lambda meta, _q, j: store.reopen_job(meta, j, f"key-{j}"),
}

BATCH_OPS: dict[str, BatchOp] = {
    "lease_batch": lambda meta, _j, b: store.lease_batch(meta, b, "worker-b", 30),
    "unqueue_batch": lambda meta, _j, b: store.unqueue_batch(meta, b),
    "finish_batch": lambda meta, _j, b: store.finish_batch(meta, Lease(b, OWNER, 1)),
    "fail_batch": lambda meta, _j, b: store.fail_batch(meta, Lease(b, OWNER, 1), "gave up"),
    "claim_pending": lambda meta, j, _b: store.claim_pending(meta, j),
    "reset_failed_batches": lambda meta, j, _b: store.reset_failed_batches(meta, j),
    "refail_batches": lambda meta, _j, b: store.refail_batches(meta, [b]),
    "cancel_job": lambda meta, j, _b: store.cancel_job(meta, j),
    "fail_job": lambda meta, j, _b: store.fail_job(meta, j, "cannot plan"),
    # What the sweeper saw, which the batch may have left since.
    "requeue_stale(running)": lambda meta, _j, b: store.requeue_stale(
        meta, b, {"status": BatchStatus.RUNNING.value}
    ),
    "requeue_stale(queued)": lambda meta, _j, b: store.requeue_stale(
        meta, b, {"status": BatchStatus.QUEUED.value}
    ),
}
for _to in (BatchStatus.QUEUED, BatchStatus.PENDING, BatchStatus.CANCELLED):
    BATCH_OPS[f"release_batch({_to.value})"] = lambda meta, _j, b, to=_to: store.release_batch(
        meta, Lease(b, OWNER, 1), to
    )


def _job(meta: Collection, status: JobStatus, *, planned: bool) -> str:
    job_id = f"job-{uuid.uuid4().hex[:10]}"
    doc = store.new_job(
        job_id,
        backfill="t",
        key=job_id,
        batch_size=2,
        max_in_flight=4,
        rate_per_second=5.0,
        collection="products",
    )
    doc["status"] = status.value
    doc["planning"]["done"] = planned
    meta.insert_one(doc)
    return job_id


def test_every_job_change_store_makes_is_in_the_table(db: Database) -> None:
    meta, quarantine = db[METADATA], db[QUARANTINE]
    seen: set[tuple[JobStatus, JobStatus]] = set()
    for (name, op), state, planned, quarantined in itertools.product(
        JOB_OPS.items(), JobStatus, (False, True), (False, True)
    ):
        job_id = _job(meta, state, planned=planned)
        if quarantined:
            quarantine.insert_one({"job_id": job_id, "item_id": 1})
        op(meta, quarantine, job_id)
        after = JobStatus(meta.find_one({"_id": job_id})["status"])
        if after is not state:
            assert allowed(state, after), f"{name}: {state.value} -> {after.value}"
            seen.add((state, after))
    listed = {(s, t) for s, out in JOB_TRANSITIONS.items() for t in out if s is not t}
    # Nothing in the table that store.py never does (the reopen of a running job aside,
    # whose status does not change).
    assert seen == listed, sorted(listed - seen)


def test_every_batch_change_store_makes_is_in_the_table(db: Database) -> None:
    meta = db[METADATA]
    seen: set[tuple[BatchStatus, BatchStatus]] = set()
    for (name, op), state in itertools.product(BATCH_OPS.items(), BatchStatus):
        job_id = _job(meta, JobStatus.RUNNING, planned=True)
        doc = store.new_batch(job_id, 0, [1, 2])
        # Owned by OWNER with token 1 in every state, its lease lapsed: only the status
        # guard stands between a call and a change the table lacks.
        doc.update(status=state.value, lease_owner=OWNER, fencing_token=1)
        meta.insert_one(doc)
        op(meta, job_id, doc["_id"])
        after = BatchStatus(meta.find_one({"_id": doc["_id"]})["status"])
        if after is not state:
            assert allowed(state, after), f"{name}: {state.value} -> {after.value}"
            seen.add((state, after))
        if state in FINAL_BATCH_STATES:
            assert after is state, name
    listed = {(s, t) for s, out in BATCH_TRANSITIONS.items() for t in out if s is not t}
    assert seen == listed, sorted(listed - seen)


def test_a_cancelled_job_stays_cancelled_whatever_store_is_asked(db: Database) -> None:
    meta, quarantine = db[METADATA], db[QUARANTINE]
    job_id = _job(meta, JobStatus.CANCELLED, planned=True)
    before = meta.find_one({"_id": job_id})
    for op in JOB_OPS.values():
        op(meta, quarantine, job_id)
    assert meta.find_one({"_id": job_id}) == before
