"""Deterministic catalog data: every value is derived from the id string and a seed.

End-to-end tests call the same functions to know what the stand-in serves for an id,
which ids it reports missing and which it answers with a hostile payload.
"""

from __future__ import annotations

import hashlib
from typing import Any

BRANDS = (
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Wonka",
    "Vandelay",
)
CATEGORIES = (
    "tools",
    "garden",
    "kitchen",
    "toys",
    "books",
    "sports",
    "office",
    "audio",
    "lighting",
    "pets",
)
MIN_WEIGHT_GRAMS = 5
MAX_WEIGHT_GRAMS = 50_000
DEFAULT_HUGE_CHARS = 10 * 1024 * 1024  # the "10 MB string" hostile payload

HOSTILE_KINDS = (
    "dollar_key",  # {"$set": {...}} next to valid fields
    "dotted_key",  # {"a.b": 1}
    "id_key",  # {"_id": "evil"}
    "huge_string",  # brand is a 10 MB string
    "nested_operator",  # category is {"$gt": ""}
    "wrong_type",  # weight_grams is the string "500"
    "bool_weight",  # weight_grams is true
    "missing_field",  # gtin absent
    "no_id",  # the entry lacks "id": the client cannot attribute it to a product
    "lone_surrogate",  # brand holds "\ud800": valid JSON, but no UTF-8 (so no BSON) form
)


def _digest(tag: str, id_str: str, seed: int) -> bytes:
    return hashlib.sha256(f"{tag}|{seed}|{id_str}".encode()).digest()


def _fraction(tag: str, id_str: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (tag, id, seed)."""
    return int.from_bytes(_digest(tag, id_str, seed)[:8], "big") / 2**64


def gtin13(first12: str) -> str:
    """Append the GS1 check digit to 12 digits."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return first12 + str((10 - total % 10) % 10)


def expected_item(id_str: str, seed: int = 0) -> dict[str, Any]:
    """The item the stand-in serves for `id_str` when it is neither missing nor hostile."""
    h = _digest("item", id_str, seed)
    brand = BRANDS[h[0] % len(BRANDS)]
    category = CATEGORIES[h[1] % len(CATEGORIES)]
    digits = str(int.from_bytes(h[2:10], "big") % 10**12).zfill(12)
    span = MAX_WEIGHT_GRAMS - MIN_WEIGHT_GRAMS + 1
    weight = MIN_WEIGHT_GRAMS + int.from_bytes(h[10:14], "big") % span
    return {
        "id": id_str,
        "brand": brand,
        "category": category,
        "gtin": gtin13(digits),
        "weight_grams": weight,
        "name": f"{brand} {category} {id_str[-6:]}",  # harmless extra key, never written
    }


def expected_fields(id_str: str, seed: int = 0) -> dict[str, Any]:
    """Only the four enriched fields of `expected_item`, as they should land in products."""
    item = expected_item(id_str, seed)
    return {k: item[k] for k in ("brand", "category", "gtin", "weight_grams")}


def is_missing(id_str: str, seed: int, missing_rate: float) -> bool:
    """Whether the catalog does not know `id_str` at this missing rate."""
    return missing_rate > 0 and _fraction("missing", id_str, seed) < missing_rate


def is_hostile(id_str: str, seed: int, hostile_rate: float) -> bool:
    """Whether `id_str` is answered with a hostile payload (missing ids never are)."""
    return hostile_rate > 0 and _fraction("hostile", id_str, seed) < hostile_rate


def is_refused(id_str: str, seed: int, refuse_rate: float) -> bool:
    """Whether a request asking for `id_str` is refused as a whole (a WAF, an ACL)."""
    return refuse_rate > 0 and _fraction("refuse", id_str, seed) < refuse_rate


def is_poison(id_str: str, seed: int, poison_rate: float) -> bool:
    """Whether a request asking for `id_str` is answered with an unparsable body as a whole."""
    return poison_rate > 0 and _fraction("poison", id_str, seed) < poison_rate


def hostile_kind(id_str: str, seed: int = 0) -> str:
    """Which hostile payload `id_str` gets; one of HOSTILE_KINDS."""
    return HOSTILE_KINDS[_digest("kind", id_str, seed)[0] % len(HOSTILE_KINDS)]


def hostile_item(
    id_str: str, seed: int = 0, huge_chars: int = DEFAULT_HUGE_CHARS
) -> dict[str, Any]:
    """A payload the client must never write: an operator, dotted key, `_id`, huge or wrong type."""
    item = expected_item(id_str, seed)
    kind = hostile_kind(id_str, seed)
    if kind == "dollar_key":
        item["$set"] = {"price": 0}
    elif kind == "dotted_key":
        item["a.b"] = 1
    elif kind == "id_key":
        item["_id"] = "evil"
    elif kind == "huge_string":
        item["brand"] = "x" * huge_chars
    elif kind == "nested_operator":
        item["category"] = {"$gt": ""}
    elif kind == "wrong_type":
        item["weight_grams"] = str(item["weight_grams"])
    elif kind == "bool_weight":
        item["weight_grams"] = True
    elif kind == "missing_field":
        del item["gtin"]
    elif kind == "lone_surrogate":
        item["brand"] = "Ac\ud800me"
    else:
        del item["id"]
    return item


def item_for(
    id_str: str,
    seed: int = 0,
    missing_rate: float = 0.0,
    hostile_rate: float = 0.0,
    huge_chars: int = DEFAULT_HUGE_CHARS,
) -> dict[str, Any] | None:
    """What the stand-in answers for `id_str`: None when missing, else the (maybe hostile) item."""
    if is_missing(id_str, seed, missing_rate):
        return None
    if is_hostile(id_str, seed, hostile_rate):
        return hostile_item(id_str, seed, huge_chars)
    return expected_item(id_str, seed)
