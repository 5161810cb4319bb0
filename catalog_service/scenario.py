"""The catalog backfill as the local stack's scenario: its API stand-in and its products.

Registered under the entry-point group `mongo_backfill.scenarios` (pyproject.toml), so
`backfill demo` and `backfill up` start the stand-in when CATALOG_URL is unset and seed
catalog-less products; the tests and the bench start the stand-in with `start_catalog`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from bson.objectid import ObjectId
from pymongo.database import Database

from migrations import VERSIONS_DIR
from migrations.versions._catalog import CATALOG, PRODUCTS, SYNCED_AT_FIELD
from orchestrator.scenario import LocalScenario, StandIn
from orchestrator.stack import LOOPBACK, ManagedProcess, free_port, spawn, wait_for_port

SEED_CHUNK = 5000


def start_catalog(
    *,
    log_dir: Path,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    token: str | None = None,
) -> ManagedProcess:
    """Start the catalog stand-in (`python -m catalog_service`) on loopback."""
    port = port or free_port()
    argv = [sys.executable, "-m", "catalog_service", "--host", LOOPBACK, "--port", str(port)]
    argv += list(extra_args)
    env = {"CATALOG_TOKEN": token} if token else {}
    proc = spawn("catalog", argv, log_dir / f"catalog-{port}.log", env=env)
    wait_for_port(proc, port)
    proc.url = f"http://{LOOPBACK}:{port}"
    return proc


def seed_products(db: Database, target: int) -> int:
    """Insert catalog-less products (ObjectId ids) up to `target`; return how many were added.

    They stand for products from before the catalog existed, so they go in past the
    validator 20240407 puts on the collection: a demo's `--seed` larger than the one
    before adds them to a database whose migrations are applied, and its re-run of the
    backfills fills them in.
    """
    products = db[PRODUCTS]
    have = products.estimated_document_count()
    added = 0
    while have + added < target:
        n = min(SEED_CHUNK, target - have - added)
        docs = [
            {
                "_id": ObjectId(),
                "sku": f"SKU-{have + added + i:08d}",
                "name": f"Product {have + added + i}",
                "price_cents": 100 + (have + added + i) % 9900,
            }
            for i in range(n)
        ]
        products.insert_many(docs, ordered=False, bypass_document_validation=True)
        added += n
    return added


def _start_standin(log_dir: Path, latency_ms: int) -> ManagedProcess:
    return start_catalog(log_dir=log_dir, extra_args=["--latency-ms", str(latency_ms)])


SCENARIO = LocalScenario(
    name="catalog",
    backfill=CATALOG.name,
    collection=PRODUCTS,
    synced_field=SYNCED_AT_FIELD,
    seed=seed_products,
    stand_ins=(StandIn(url_env="CATALOG_URL", label="catalog", start=_start_standin),),
    migrations_dir=VERSIONS_DIR,
)
