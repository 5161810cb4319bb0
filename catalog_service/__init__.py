"""Local stand-in for the external catalog API: a real threaded HTTP server with fault knobs."""

from catalog_service.data import expected_fields as expected_fields
from catalog_service.data import expected_item as expected_item
from catalog_service.data import hostile_kind as hostile_kind
from catalog_service.data import is_hostile as is_hostile
from catalog_service.data import is_missing as is_missing
from catalog_service.data import item_for as item_for
from catalog_service.faults import Faults as Faults
from catalog_service.server import MAX_IDS_PER_REQUEST as MAX_IDS_PER_REQUEST
from catalog_service.server import make_server as make_server

__all__ = [
    "MAX_IDS_PER_REQUEST",
    "Faults",
    "expected_fields",
    "expected_item",
    "hostile_kind",
    "is_hostile",
    "is_missing",
    "item_for",
    "make_server",
]
