"""The floor of a diff-only backfill and the engine-vs-floor ratios (numbers never asserted)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pymongo
import pytest
from pymongo.database import Database

from backfill_engine.settings import Settings
from bench.cli import parse, run
from bench.data import product_docs, seed
from bench.floor import FloorRun, compare, desired_fields, diff_only, targets
from bench.scenarios import Row
from bench.traffic import Traffic, TrafficListener
from migrations.versions._catalog import CATALOG_FIELDS, PRODUCTS, SYNCED_AT_FIELD

OLD_STAMP = dt.datetime(2020, 1, 1)


def test_floor_writes_exactly_the_changed_documents(db: Database, settings: Settings) -> None:
    docs = product_docs(250)
    seed(db, docs)
    ids = [d["_id"] for d in docs]
    desired = desired_fields(ids)
    # 50 documents already hold their catalog values; 20 more hold a wrong brand.
    for i in ids[:50]:
        db[PRODUCTS].update_one({"_id": i}, {"$set": {**desired[i], SYNCED_AT_FIELD: OLD_STAMP}})
    for i in ids[50:70]:
        wrong = {**desired[i], "brand": "NotABrand"}
        db[PRODUCTS].update_one({"_id": i}, {"$set": {**wrong, SYNCED_AT_FIELD: OLD_STAMP}})

    listener = TrafficListener()
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url, event_listeners=[listener]
    )
    try:
        writes = diff_only(client[db.name][PRODUCTS], desired, read_ids=25)
        first = listener.snapshot()
        again = diff_only(client[db.name][PRODUCTS], desired, read_ids=25)
        second = listener.snapshot().minus(first)
    finally:
        client.close()

    assert writes == 200
    unchanged = db[PRODUCTS].count_documents({"_id": {"$in": ids[:50]}, SYNCED_AT_FIELD: OLD_STAMP})
    assert unchanged == 50
    for doc in db[PRODUCTS].find():
        assert {k: doc[k] for k in CATALOG_FIELDS} == desired[doc["_id"]]
    # 100 + 100 + 50 ids: 4 + 4 + 2 reads of 25 ids, one bulk write per sub-chunk.
    assert first.by_name == {"find products": 10, "update products": 3}
    assert first.commands == 13 and first.bytes_sent > 0 and first.bytes_received > 0
    # Nothing differs any more: the same reads, no write.
    assert again == 0
    assert second.by_name == {"find products": 10}


def _row(**kw: object) -> Row:
    base: dict[str, object] = {
        "scenario": "system",
        "label": "1xprefork(1)",
        "products": 1000,
        "seconds": 2.0,
        "latency_ms": 0.0,
        "processes": 1,
        "concurrency": 1,
        "pool": "prefork",
        "writes": 1000,
        "batches": 2,
        "cpu_s": {"secantusdb": 1.2, "workers": 0.3, "orchestrator": 0.1},
        "mongo_traffic": {
            "commands": 60,
            "bytes_sent": 400_000,
            "bytes_received": 90_000,
            "listener_cpu_s": 0.02,
            "by_name": {"find products": 20, "update products": 10},
        },
    }
    base.update(kw)
    return Row(**base)  # type: ignore[arg-type]


def test_ratios_are_computed_from_the_measured_values() -> None:
    floor = FloorRun(
        products=1000,
        seconds=1.0,
        writes=1000,
        read_ids=25,
        server_cpu_s=1.0,
        own_cpu_s=0.05,
        traffic=Traffic(commands=50, bytes_sent=200_000, bytes_received=30_000),
    )
    point = compare(floor, _row())
    assert point is not None
    assert point["engine"]["server_cpu_ms"] == pytest.approx(1.2)
    assert point["floor"]["server_cpu_ms"] == pytest.approx(1.0)
    assert point["ratios"]["server_cpu_ms"] == pytest.approx(1.2)
    assert point["ratios"]["commands"] == pytest.approx(60 / 50)
    assert point["ratios"]["bytes_sent"] == pytest.approx(2.0)
    assert point["ratios"]["bytes_received"] == pytest.approx(3.0)
    # our CPU: workers + orchestrator, the listener's own share taken out
    assert point["engine"]["own_cpu_ms"] == pytest.approx(0.38)
    assert point["ratios"]["own_cpu_ms"] == pytest.approx(0.38 / 0.05, abs=0.01)
    assert point["commands_per_batch"] == 30.0 and point["floor_commands_per_batch"] == 25.0
    assert point["server_cpu_met"] is True and point["own_cpu_met"] is False

    four = compare(floor, _row(label="2xprefork(2)", processes=2, concurrency=2))
    assert four is not None and four["server_cpu_target_x"] == 1.5
    reads0 = compare(floor, _row(mongo_traffic={"commands": 20, "by_name": {}}))
    assert reads0 is not None and reads0["commands_per_batch"] == 10.0
    judged = {t["target"]: t["met"] for t in targets([point, four], reads0)}
    assert judged == {
        "server CPU per document <= 1.3 x floor (1 slot, 0 ms)": True,
        "server CPU per document <= 1.5 x floor (4 slots, 0 ms)": True,
        "our CPU per document <= 2 x the floor process's": False,
        "MongoDB commands per 500-id batch <= 15 (BACKFILL_READ_IDS=0)": True,
    }
    assert compare(floor, _row(mongo_traffic={})) is None  # not measured: no ratio

    # The in-process source run is shown beside the judged runs, never judged itself.
    local = compare(floor, _row(label="1xprefork(1), source in-process"))
    assert local is not None
    local["own_cpu_met"] = None
    rows = targets([point, four], reads0, local)
    assert {t["target"]: t["met"] for t in rows} == judged
    (own,) = [t for t in rows if t["target"].startswith("our CPU")]
    assert "7.60x with the source in-process (1xprefork(1), source in-process:" in own["measured"]


@pytest.mark.timeout(300)
def test_bench_floor_series_compares_the_engine_with_the_floor(tmp_path: Path) -> None:
    opts = parse(
        [
            "--products", "500",
            "--naive-products", "5",
            "--processes", "1",
            "--latencies", "0",
            "--pools", "prefork",
            "--concurrency", "1",
            "--no-rerun",
            "--no-memory-check",
            "--no-scaling",
            "--no-auto-rate",
            "--no-peer",  # tests/bench/test_peer.py
            "--no-journal-cost",  # tests/bench/test_journal_cost.py
            "--no-validator-cost",  # tests/bench/test_validator_cost.py
            "--read-ids0-products", "500",
            "--results-dir", str(tmp_path / "results"),
            "--doc", str(tmp_path / "benchmarks.md"),
            "--chart", str(tmp_path / "benchmarks.png"),
            "--readme", str(tmp_path / "README.md"),
            "--log-dir", str(tmp_path / "logs"),
        ]
    )  # fmt: skip
    result = run(opts, say=lambda line: None)

    assert result.floor is not None
    (point,) = result.floor["points"]
    reads0 = result.floor["reads0"]
    assert point["label"] == "1xprefork(1)" and point["read_ids"] == 25
    assert reads0["read_ids"] == 0
    for p in (point, reads0):
        assert p["floor_writes"] == 500 and p["engine_writes"] == 500
        for side in ("engine", "floor"):
            assert set(p[side]) == {
                "server_cpu_ms", "own_cpu_ms", "commands", "bytes_sent", "bytes_received"
            }  # fmt: skip
            assert all(v > 0 for v in p[side].values())
        # Only the worker processes write products: their counts reached the bench.
        # (one client bulkWrite per sub-chunk where the server takes it, updates otherwise)
        writes = sum(
            n
            for k, n in p["by_name"].items()
            if k.split()[0] in ("update", "bulkWrite") and "products" in k.split()[1].split("+")
        )
        assert writes >= 5
        # The orchestrator (this process) launched and polled the job: its share is apart.
        assert 0 < p["orchestrator_commands_per_batch"] < p["commands_per_batch"]
    # The same backfill with the catalog's answers computed in the workers: every product
    # written, not one HTTP request, and its ratios against a floor of its own.
    local = result.floor["local"]
    assert local["label"] == "1xprefork(1), source in-process"
    assert local["engine_writes"] == 500 and local["floor_writes"] == 500
    assert local["catalog_requests"] == 0
    assert local["ratios"]["own_cpu_ms"] is not None and local["own_cpu_met"] is None
    # The floor does 25-id reads like the engine; with BACKFILL_READ_IDS=0 one per 100 ids.
    assert point["floor_commands_per_batch"] == 25.0
    assert reads0["floor_commands_per_batch"] == 10.0

    body = json.loads(result.json_path.read_text())
    assert body["floor"]["points"] and body["floor_targets"]
    doc = (tmp_path / "benchmarks.md").read_text()
    assert "## Floor: the engine's database work per document" in doc
    assert "| 1xprefork(1) (1 slot) | 25 | database server CPU ms |" in doc
    assert "MongoDB commands per 500-id batch <= 15 (BACKFILL_READ_IDS=0)" in doc
    assert "| 1xprefork(1), source in-process (1 slot) | 25 | database server CPU ms |" in doc


def test_the_commands_table_names_the_busiest_commands_first() -> None:
    from bench.report import floor_commands_table

    # Counts summed over processes keep the order the names were first met in, not by size.
    by_name = {f"find c{i}": 1 for i in range(10)} | {"bulkWrite products": 50, "find x": 20}
    point = {
        "label": "1xprefork(1)",
        "read_ids": 0,
        "batches": 10,
        "by_name": by_name,
        "commands_per_batch": 8.0,
        "orchestrator_commands_per_batch": 0.0,
        "floor_commands_per_batch": 7.0,
    }
    row = floor_commands_table({"points": [point]}).splitlines()[-1]
    assert "| bulkWrite products 5.0, find x 2.0, find c0 0.1," in row


def test_the_bench_s_own_work_in_a_worker_is_taken_out_with_the_listener_s() -> None:
    # A worker's hook charges writing its count files to the listener, so the engine's CPU
    # per document (the process's CPU minus listener_cpu_s) does not carry the bench's work.
    listener = TrafficListener()
    before = listener.snapshot()
    listener.charge(0.25)
    listener.charge(0.5)
    spent = listener.snapshot().minus(before)
    assert spent.listener_cpu_s == pytest.approx(0.75)
    assert spent.commands == 0 and spent.by_name == {}
    row = _row(mongo_traffic={**_row().mongo_traffic, "listener_cpu_s": 0.3})
    point = compare(FloorRun(1000, 1.0, 1000, 25, 1.0, 0.05, Traffic(commands=50)), row)
    assert point is not None
    # workers 0.3 s + orchestrator 0.1 s - 0.3 s of the bench's = 0.1 ms per product
    assert point["engine"]["own_cpu_ms"] == pytest.approx(0.1)
