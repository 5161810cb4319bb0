"""The floor of a diff-only backfill, and the engine's database work per document against it.

The floor is one process doing only what any tool that writes just the changed fields
must: per sub-chunk of 100 ids (the engine's size), read the documents' current fields by
`_id` (the fields the engine reads, `$in` lists as long as the engine's), compare them
with the catalog values, and `bulk_write` the `$set`s of the documents that differ. The
catalog values are computed before the clock starts from the stand-in's deterministic
data (catalog_service.data), as the ceiling precomputes its `$set`s: no HTTP, no leases,
checkpoints, journal or quarantine. What the engine spends beyond it per document is
the price of those.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pymongo
from pymongo import UpdateOne
from pymongo.collection import Collection

from backfill_engine import paths
from backfill_engine.payload import build_set, diff_fields
from backfill_engine.settings import DEFAULT_SUBCHUNK_SIZE
from backfill_engine.store import now_utc
from bench.probes import cpu_seconds
from bench.scenarios import Bench, Row
from bench.traffic import Traffic, TrafficListener
from catalog_service.data import expected_fields
from migrations.versions._catalog import CATALOG, PRODUCTS

BATCH_IDS = 500  # the unit of "commands per batch": the bench's batch size
FLOOR_SLOTS = (1, 4)  # the engine's 0 ms first runs compared with the floor, by pool slots
# Targets of issue 19 part 2: engine / floor, per document.
TARGET_SERVER_CPU_X = {1: 1.3, 4: 1.5}  # by worker slots
TARGET_OWN_CPU_X = 2.0
TARGET_CMDS_PER_BATCH = 15.0  # with BACKFILL_READ_IDS=0, per 500-id batch
# The fields the engine reads of each document: its projection and the synced stamp.
READ_FIELDS = paths.projection((*CATALOG.projection, CATALOG.synced_field))


@dataclass
class FloorRun:
    """One floor measurement: its writes, the server's CPU, its own CPU and its traffic."""

    products: int
    seconds: float
    writes: int
    read_ids: int
    server_cpu_s: float
    own_cpu_s: float  # this thread's CPU, the listener's own share taken out
    traffic: Traffic = field(default_factory=Traffic)

    def per_product(self) -> dict[str, float]:
        return _per_product(
            self.products, self.server_cpu_s, self.own_cpu_s, self.traffic.as_dict()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "products": self.products,
            "seconds": round(self.seconds, 3),
            "writes": self.writes,
            "read_ids": self.read_ids,
            "server_cpu_s": round(self.server_cpu_s, 3),
            "own_cpu_s": round(self.own_cpu_s, 3),
            "traffic": self.traffic.as_dict(),
            "per_product": self.per_product(),
        }


def desired_fields(ids: Sequence[Any]) -> dict[Any, dict[str, Any]]:
    """The catalog fields the stand-in serves for each id (none missing, none hostile)."""
    return {i: expected_fields(str(i)) for i in ids}


def diff_only(
    coll: Collection,
    desired: dict[Any, dict[str, Any]],
    *,
    read_ids: int = 0,
    subchunk: int = DEFAULT_SUBCHUNK_SIZE,
) -> int:
    """Read, compare and write the changed documents of `desired`, a sub-chunk at a time.

    `read_ids` > 0 splits each sub-chunk's `$in` read into lists that long (as the
    engine's BACKFILL_READ_IDS does). Returns the documents modified.
    """
    ids = list(desired)
    step = read_ids if read_ids > 0 else subchunk
    writes = 0
    for start in range(0, len(ids), subchunk):
        chunk = ids[start : start + subchunk]
        current: dict[Any, dict[str, Any]] = {}
        for at in range(0, len(chunk), step):
            piece = chunk[at : at + step]
            # One more than can match, so the first reply closes the cursor (no getMore).
            for doc in coll.find({"_id": {"$in": piece}}, READ_FIELDS, batch_size=len(piece) + 1):
                current[doc["_id"]] = doc
        now = now_utc()
        ops = []
        for i in chunk:
            doc = current.get(i)
            if doc is None:
                continue
            diff = diff_fields(doc, desired[i])
            if diff:
                written = build_set(diff, now, CATALOG.synced_field)
                ops.append(UpdateOne({"_id": i}, {"$set": written}))
        if ops:
            writes += coll.bulk_write(ops, ordered=False).modified_count
    return writes


def floor(bench: Bench, n: int, *, read_ids: int | None = None) -> FloorRun:
    """The floor on a fresh database of the first `n` seeded products (every one changes)."""
    db = bench.fresh_db(n)
    per_read = bench.read_ids if read_ids is None else read_ids
    desired = desired_fields([d["_id"] for d in bench.docs[:n]])
    listener = TrafficListener()
    client: pymongo.MongoClient = pymongo.MongoClient(
        bench.servers.mongo.url, event_listeners=[listener]
    )
    try:
        client.admin.command("ping")  # connect before the clock starts
        coll = client[db.name][PRODUCTS]
        before = listener.snapshot()
        server0 = cpu_seconds([bench.servers.mongo.pid])
        own0 = time.thread_time()
        t0 = time.perf_counter()
        writes = diff_only(coll, desired, read_ids=per_read)
        seconds = time.perf_counter() - t0
        own = time.thread_time() - own0
        server = cpu_seconds([bench.servers.mongo.pid]) - server0
        traffic = listener.snapshot().minus(before)
    finally:
        client.close()
        bench.drop(db)
    return FloorRun(n, seconds, writes, per_read, server, own - traffic.listener_cpu_s, traffic)


def _per_product(
    n: int, server_cpu_s: float, own_cpu_s: float, traffic: dict[str, Any]
) -> dict[str, float]:
    n = max(n, 1)
    return {
        "server_cpu_ms": round(1000 * server_cpu_s / n, 4),
        "own_cpu_ms": round(1000 * own_cpu_s / n, 4),
        "commands": round(traffic.get("commands", 0) / n, 4),
        "bytes_sent": round(traffic.get("bytes_sent", 0) / n, 1),
        "bytes_received": round(traffic.get("bytes_received", 0) / n, 1),
    }


def engine_per_product(row: Row) -> dict[str, float] | None:
    """A system row's per-document costs in the floor's terms (None if not measured)."""
    server = row.cpu_s.get("secantusdb")
    own = row.own_cpu_ms_per_product
    if server is None or own is None or not row.mongo_traffic or not row.products:
        return None
    listener_s = float(row.mongo_traffic.get("listener_cpu_s", 0.0))
    own_s = own * row.products / 1000 - listener_s
    return _per_product(row.products, server, own_s, row.mongo_traffic)


def _ratio(engine: float, base: float) -> float | None:
    return round(engine / base, 2) if base > 0 else None


def compare(run: FloorRun, row: Row) -> dict[str, Any] | None:
    """Engine / floor per document for one system row, with its targets met or missed."""
    engine = engine_per_product(row)
    if engine is None:
        return None
    base = run.per_product()
    ratios = {k: _ratio(engine[k], base[k]) for k in engine}
    slots = row.slots or 0
    server_target = TARGET_SERVER_CPU_X.get(slots)
    server_x, own_x = ratios["server_cpu_ms"], ratios["own_cpu_ms"]
    return {
        "label": row.label,
        "slots": slots,
        "products": row.products,
        "batches": row.batches,
        "read_ids": run.read_ids,
        "engine": engine,
        "floor": base,
        "ratios": ratios,
        "server_cpu_target_x": server_target,
        "server_cpu_met": (
            None if server_target is None or server_x is None else server_x <= server_target
        ),
        "own_cpu_target_x": TARGET_OWN_CPU_X,
        "own_cpu_met": None if own_x is None else own_x <= TARGET_OWN_CPU_X,
        "commands_per_batch": round(
            row.mongo_traffic.get("commands", 0) / max(row.batches or 1, 1), 1
        ),
        "orchestrator_commands_per_batch": round(
            row.mongo_traffic.get("orchestrator_commands", 0) / max(row.batches or 1, 1), 1
        ),
        "floor_commands_per_batch": round(base["commands"] * BATCH_IDS, 1),
        "by_name": dict(row.mongo_traffic.get("by_name") or {}),
        "floor_writes": run.writes,
        "engine_writes": row.writes,
    }


def compared(row: Row) -> bool:
    """Whether a row is one of the engine's runs the floor section compares."""
    return row.scenario == "system" and row.latency_ms == 0 and (row.slots or 0) in FLOOR_SLOTS


def targets(
    points: list[dict[str, Any]],
    reads0: dict[str, Any] | None,
    local: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The floor targets, measured and met, in report.targets' shape.

    `local` (the run with the source in-process) is not judged; the our-CPU row shows it
    beside the judged runs, to say how much of the miss the HTTP call is."""
    out: list[dict[str, Any]] = []
    for p in points:
        if p["server_cpu_target_x"] is not None and p["server_cpu_met"] is not None:
            out.append(
                {
                    "target": f"server CPU per document <= {p['server_cpu_target_x']} x floor "
                    f"({p['slots']} slot{'s' if p['slots'] != 1 else ''}, 0 ms)",
                    "measured": f"{p['ratios']['server_cpu_ms']:.2f}x ({p['label']}: "
                    f"{p['engine']['server_cpu_ms']:.3f} vs {p['floor']['server_cpu_ms']:.3f} ms)",
                    "met": p["server_cpu_met"],
                }
            )
    judged = [p for p in points if p["own_cpu_met"] is not None]
    if judged:
        worst = max(judged, key=lambda p: p["ratios"]["own_cpu_ms"])
        beside = ""
        if local is not None and local["ratios"]["own_cpu_ms"] is not None:
            beside = (
                f"; {local['ratios']['own_cpu_ms']:.2f}x with the source in-process "
                f"({local['label']}: {local['engine']['own_cpu_ms']:.3f} vs "
                f"{local['floor']['own_cpu_ms']:.3f} ms)"
            )
        out.append(
            {
                "target": f"our CPU per document <= {TARGET_OWN_CPU_X:.0f} x the floor process's",
                "measured": f"{worst['ratios']['own_cpu_ms']:.2f}x worst ({worst['label']}: "
                f"{worst['engine']['own_cpu_ms']:.3f} vs {worst['floor']['own_cpu_ms']:.3f} ms)"
                + beside,
                "met": all(p["own_cpu_met"] for p in judged),
            }
        )
    if reads0 is not None:
        cmds = reads0["commands_per_batch"]
        out.append(
            {
                "target": f"MongoDB commands per 500-id batch <= {TARGET_CMDS_PER_BATCH:.0f} "
                "(BACKFILL_READ_IDS=0)",
                "measured": f"{cmds:.1f} ({reads0['label']}; "
                f"{reads0.get('orchestrator_commands_per_batch', 0):.1f} of them the "
                "orchestrator's: launch, planning, dispatch, polls; "
                f"floor {reads0['floor_commands_per_batch']:.1f})",
                "met": cmds <= TARGET_CMDS_PER_BATCH,
            }
        )
    return out
