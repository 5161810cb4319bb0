"""Require the enriched catalog fields on every product (validator + indexes)."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from migrations import (
    Migration,
    PreconditionFailedError,
    SchemaBuilder,
    asc,
    create_indexes,
    drop_indexes,
    ensure_collection,
    index,
    schema,
    with_validation_level,
    with_validator,
)

PRODUCTS = "products"
ENRICHED_FIELDS = ("brand", "category", "gtin", "weight_grams", "catalog_synced_at")
SAMPLE_SIZE = 5

S = SchemaBuilder

INDEXES = [
    index(asc("gtin")).name("gtin"),
    index(asc("category", "brand")).name("category_brand"),
]


class ProductsNotEnrichedError(PreconditionFailedError):
    """Some products still lack enriched fields: the backfill has not finished."""

    def __init__(self, count: int, sample_ids: list[Any]) -> None:
        self.count, self.sample_ids = count, sample_ids
        shown = ", ".join(repr(i) for i in sample_ids)
        super().__init__(
            f"{count} product(s) lack enriched fields {', '.join(ENRICHED_FIELDS)} "
            f"(e.g. {shown}); finish the backfill first"
        )


def missing_filter() -> dict[str, Any]:
    """Products lacking any enriched field (absent or null)."""
    return {"$or": [{f: None} for f in ENRICHED_FIELDS]}


def products_validator() -> SchemaBuilder:
    """Enriched fields required, with their types; other fields are left free."""
    return (
        schema()
        .bson_type("object")
        .field("brand", S.string(), required=True)
        .field("category", S.string(), required=True)
        .field("gtin", S.string(), required=True)
        .field("weight_grams", S().bson_type("int", "long"), required=True)
        .field("catalog_synced_at", S.date(), required=True)
    )


class EnforceCatalogFields(Migration):
    version = "20240407_enforce_catalog_fields"
    description = "validator requiring brand, category, gtin, weight_grams, catalog_synced_at"

    def up(self, db: Database) -> None:
        products = db[PRODUCTS]
        missing = products.count_documents(missing_filter())
        if missing:
            sample = [
                d["_id"] for d in products.find(missing_filter(), {"_id": 1}).limit(SAMPLE_SIZE)
            ]
            raise ProductsNotEnrichedError(missing, sample)
        ensure_collection(
            db, PRODUCTS, with_validator(products_validator()), with_validation_level("strict")
        )
        create_indexes(products, *INDEXES)

    def down(self, db: Database) -> None:
        if PRODUCTS in db.list_collection_names(filter={"name": PRODUCTS}):
            db.command("collMod", PRODUCTS, validator={}, validationLevel="off")
        drop_indexes(db[PRODUCTS], *INDEXES)
