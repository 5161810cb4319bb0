"""Fixtures: the catalog stand-in started as a real process via orchestrator.stack."""

from tests.catalog.standin import (  # noqa: F401  (fixtures are found by name)
    catalog,
    catalog_server,
    secured_catalog,
    secured_catalog_server,
)
