"""Seeded products (ObjectId `_id`s) and the `$set` each should end up with."""

from __future__ import annotations

import datetime as dt
from typing import Any

from bson.objectid import ObjectId
from pymongo import UpdateOne
from pymongo.database import Database

from backfill_engine.payload import build_set
from catalog_service.data import expected_fields
from migrations.versions._catalog import PRODUCTS, SYNCED_AT_FIELD

SEED_CHUNK = 5000


def product_docs(n: int) -> list[dict[str, Any]]:
    """`n` catalog-less products shaped like the demo's."""
    return [
        {
            "_id": ObjectId(),
            "sku": f"SKU-{i:08d}",
            "name": f"Product {i}",
            "price_cents": 100 + i % 9900,
        }
        for i in range(n)
    ]


def seed(db: Database, docs: list[dict[str, Any]]) -> None:
    """Insert copies of `docs` (the same `_id`s in every database)."""
    products = db[PRODUCTS]
    for start in range(0, len(docs), SEED_CHUNK):
        products.insert_many([dict(d) for d in docs[start : start + SEED_CHUNK]], ordered=False)


def precomputed_updates(ids: list[Any]) -> list[UpdateOne]:
    """The `$set` the backfill writes for each id, computed without the catalog or the engine."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return [
        UpdateOne({"_id": i}, {"$set": build_set(expected_fields(str(i)), now, SYNCED_AT_FIELD)})
        for i in ids
    ]
