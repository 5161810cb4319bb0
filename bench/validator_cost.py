"""What a `$jsonSchema` validator and two indexes cost the embedded server per `$set`.

`python -m bench.validator_cost [--products N] [--rounds R]`: the same unordered
`bulk_write` of a two-field `$set` (100 per command) on products without and with
20240407's validator and indexes (gtin, category_brand), alternating, on one fresh
SecantusDB; prints the server's CPU-ms per document for each. It is why gtin14, which runs
after 20240407, costs the server more per document than the catalog backfill before it.
`make bench` runs it too and writes its section of docs/benchmarks.md (`section`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pymongo
from bson import ObjectId
from pymongo import UpdateOne

from orchestrator.stack import embedded_mongo_url

ENFORCE = "migrations.versions.20240407_enforce_catalog_fields"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _enriched(i: int) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC)
    return {
        "_id": ObjectId(),
        "sku": f"S{i}",
        "brand": "B",
        "category": "C",
        "gtin": f"{i:013d}",
        "weight_grams": 5,
        "catalog_synced_at": now,
    }


MODES = ("plain", "validated")
BEGIN = "<!-- bench:validator:begin (written by `make bench`) -->"
END = "<!-- bench:validator:end -->"


class NotAllWritten(RuntimeError):
    """A round's `$set`s did not change every document: its CPU figure would mean nothing."""


def measure(products: int, rounds: int) -> dict[str, list[float]]:
    """Server CPU-ms per document of the `$set`s, per mode, one value per round.

    Raises NotAllWritten unless every round changed every one of its documents."""
    port, data = _free_port(), tempfile.mkdtemp(prefix="validator-cost-")
    server = Path(sys.executable).with_name("secantusd-py")
    proc = subprocess.Popen(
        [str(server), "--port", str(port), "--storage-path", data],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client: pymongo.MongoClient = pymongo.MongoClient(
        embedded_mongo_url(port), serverSelectionTimeoutMS=30_000
    )
    enforce = importlib.import_module(ENFORCE).EnforceCatalogFields()
    out: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        client.admin.command("ping")
        ps = psutil.Process(proc.pid)
        for rnd in range(rounds):
            for mode in out:
                db = client[f"validator_cost_{mode}_{rnd}"]
                docs = [_enriched(i) for i in range(products)]
                db.products.insert_many(docs)
                if mode == "validated":
                    enforce.up(db)
                ids = [d["_id"] for d in docs]
                before, changed = sum(ps.cpu_times()[:2]), 0
                for k in range(0, products, 100):
                    sets = {"gtin14": f"{k:014d}", "gtin14_synced_at": time.time()}
                    res = db.products.bulk_write(
                        [UpdateOne({"_id": i}, {"$set": sets}) for i in ids[k : k + 100]],
                        ordered=False,
                    )
                    changed += res.modified_count
                out[mode].append((sum(ps.cpu_times()[:2]) - before) * 1000 / products)
                if changed != products:
                    raise NotAllWritten(f"{mode} round {rnd}: {changed} of {products} changed")
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)
    return out


def ratio(result: dict[str, list[float]]) -> float:
    """Validated over plain, the least round of each (the least disturbed by the host)."""
    return min(result["validated"]) / min(result["plain"])


def section(result: dict[str, list[float]], products: int) -> str:
    """docs/benchmarks.md's section: each mode's rounds and the ratio, between markers."""
    rows = [
        f"| {mode} | {', '.join(f'{v:.3f}' for v in result[mode])} | {min(result[mode]):.3f} |"
        for mode in MODES
    ]
    body = [
        "## What 20240407's validator costs a later backfill",
        "",
        f"{products:,} enriched products per round, the same unordered `bulk_write` of a "
        "two-field `$set` (100 per command) without (plain) and with 20240407's `$jsonSchema` "
        "validator and its two indexes (validated), alternating on one fresh embedded server "
        "(bench/validator_cost.py). Server CPU-ms per document:",
        "",
        "| mode | rounds | least |",
        "|---|---|---:|",
        *rows,
        "",
        f"Validated / plain: **{ratio(result):.2f}x**. gtin14 runs after 20240407 and the catalog "
        "backfill before it, so each of its writes costs the server this much more: why a "
        "backfill with no API is not faster than the one calling it.",
    ]
    return BEGIN + "\n\n" + "\n".join(body) + "\n\n" + END


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.validator_cost", description=__doc__)
    ap.add_argument("--products", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    result = measure(args.products, args.rounds)
    for mode, values in result.items():
        shown = ", ".join(f"{v:.3f}" for v in values)
        print(f"{mode:10s} server CPU ms per $set: {shown}")
    print(f"validated / plain: {ratio(result):.2f}x (least of each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
