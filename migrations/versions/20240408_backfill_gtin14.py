"""Derive a normalised 14-digit gtin14 from gtin, as a backfill with no external API."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pymongo.database import Database

from backfill_engine import Backfill, FunctionSource, InvalidPayloadError
from migrations import Migration, MigrationContext

_DIGITS = re.compile(r"[0-9]{8,14}")


def check_digit_ok(gtin14: str) -> bool:
    """GS1 mod-10: weights 3,1,3,... from the right, the last digit excluded."""
    body, check = gtin14[:-1], int(gtin14[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def to_gtin14(doc: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any] | None:
    """`gtin` left-padded with zeros to 14 digits; None (missing) when there is no gtin."""
    gtin = doc.get("gtin")
    if gtin is None:
        return None
    if not isinstance(gtin, str) or not _DIGITS.fullmatch(gtin):
        raise ValueError("gtin is not 8-14 digits")
    padded = gtin.zfill(14)
    if params.get("require_check_digit") and not check_digit_ok(padded):
        raise ValueError(f"gtin {gtin} has a wrong check digit")
    return {"gtin14": padded}


def check_gtin14(fields: dict[str, Any]) -> dict[str, Any]:
    if len(fields["gtin14"]) != 14 or not fields["gtin14"].isascii():
        raise InvalidPayloadError("gtin14 must be 14 digits", "gtin14")
    return fields


GTIN14 = Backfill(
    name="gtin14",
    description="gtin14: gtin left-padded to 14 digits (no external API)",
    collection="products",
    query={"gtin": {"$type": "string"}},
    reads=("gtin",),
    source=FunctionSource(to_gtin14),
    writes={"gtin14": str},
    check=check_gtin14,
    synced_field="gtin14_synced_at",
    params={"require_check_digit": bool},
)


class BackfillGtin14(Migration):
    version = "20240408_backfill_gtin14"
    description = "derive gtin14 from gtin on every product that has a gtin"

    def up(self, db: Database, ctx: MigrationContext | None = None) -> None:
        from orchestrator.backfill_runs import run_backfill

        run_backfill(db, GTIN14, ctx)

    def down(self, db: Database, ctx: MigrationContext | None = None) -> None:
        from orchestrator.backfill_runs import undo_backfill

        undo_backfill(db, GTIN14, ctx)
