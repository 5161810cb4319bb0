"""The catalog backfill's definition and rules, shared by its migrations and its tests.

A helper module of the migrations directory (discovery skips `_` files); migration
20240406 runs CATALOG, 20240407 locks its fields in.
"""

from __future__ import annotations

import re
from typing import Any

from backfill_engine import Backfill, HttpSource, InvalidPayloadError
from backfill_engine.validate import validate_payload

MAX_WEIGHT_GRAMS = 10_000_000  # 10 tonnes: beyond any product we sell
# ASCII digits only: `\d` would also accept other scripts' digits. The check digit is not
# verified: real catalogs carry legacy codes whose check digits we should not second-guess.
_GTIN = re.compile(r"[0-9]{8,14}")


def check_catalog_item(fields: dict[str, Any]) -> dict[str, Any]:
    """The catalog's rules beyond types: a GTIN of 8-14 digits, a plausible weight."""
    if not _GTIN.fullmatch(fields["gtin"]):
        raise InvalidPayloadError("gtin must be 8-14 digits", "gtin")
    if not 0 < fields["weight_grams"] <= MAX_WEIGHT_GRAMS:
        raise InvalidPayloadError(
            f"weight_grams {fields['weight_grams']} outside 1..{MAX_WEIGHT_GRAMS}", "weight_grams"
        )
    return fields


PRODUCTS = "products"  # the collection the catalog backfill enriches
CATALOG_FIELDS: dict[str, type] = {"brand": str, "category": str, "gtin": str, "weight_grams": int}
SYNCED_AT_FIELD = "catalog_synced_at"
CATALOG_PATH = "/v1/products"

CATALOG = Backfill(
    name="catalog",
    description="brand, category, gtin, weight_grams from the catalog API",
    collection=PRODUCTS,
    source=HttpSource(
        url_env="CATALOG_URL",
        token_env="CATALOG_TOKEN",
        token_required=False,  # the stand-in answers without one unless started with one
        path=CATALOG_PATH,
        rate_bucket="catalog",
    ),
    writes=CATALOG_FIELDS,
    check=check_catalog_item,
    synced_field=SYNCED_AT_FIELD,
)


def validate_catalog_item(payload: Any) -> dict[str, Any]:
    """One catalog payload as the backfill validates it: whitelist, exact types, its rules."""
    return validate_payload(payload, CATALOG.writes, CATALOG.check)
