"""Registry and version rules (no server needed)."""

from __future__ import annotations

import pytest
from pymongo.database import Database

import migrations
from backfill_migrations import (
    InvalidVersionFormatError,
    Migration,
    MigrationError,
    MigrationNilError,
    MigrationRegisteredError,
    Registry,
    validate_version,
)
from backfill_migrations.registry import reset_registry


class Noop(Migration):
    def __init__(self, version: str) -> None:
        self.version = version
        self.description = f"noop {version}"

    def up(self, db: Database) -> None:
        pass

    def down(self, db: Database) -> None:
        pass


@pytest.fixture(autouse=True)
def clean_global_registry():
    reset_registry()
    yield
    reset_registry()


@pytest.mark.parametrize(
    "version", ["20240405", "20240405_create", "20240405_a_b_9", "20240229_leap"]
)
def test_valid_versions_pass(version: str) -> None:
    assert validate_version(version) == version


@pytest.mark.parametrize(
    "version",
    [
        "2024040",  # seven digits
        "202404051",  # nine digits
        "20240405-slug",
        "20240405_Slug",  # upper case
        "20240405_",  # empty slug
        "20240405 slug",
        "v20240405",
        "",
    ],
)
def test_badly_formatted_versions_are_rejected(version: str) -> None:
    with pytest.raises(InvalidVersionFormatError) as err:
        validate_version(version)
    assert repr(version) in str(err.value)


@pytest.mark.parametrize("version", ["20241301_x", "20240230", "20230229_not_leap", "00000000"])
def test_versions_that_are_not_real_dates_are_rejected(version: str) -> None:
    with pytest.raises(InvalidVersionFormatError, match="not a real date"):
        validate_version(version)


def test_registering_none_raises_nil_error() -> None:
    with pytest.raises(MigrationNilError):
        migrations.register(None)
    assert isinstance(MigrationNilError(), MigrationError)


def test_registering_a_bad_version_raises_format_error() -> None:
    with pytest.raises(InvalidVersionFormatError, match="2024_x"):
        migrations.register(Noop("2024_x"))
    assert migrations.registered_migrations() == {}


def test_registering_a_version_twice_names_it() -> None:
    migrations.register(Noop("20240405_a"))
    with pytest.raises(MigrationRegisteredError, match="20240405_a") as err:
        migrations.register(Noop("20240405_a"))
    assert err.value.version == "20240405_a"


def test_must_register_is_all_or_nothing() -> None:
    with pytest.raises(MigrationRegisteredError, match="20240406_b"):
        migrations.must_register(Noop("20240405_a"), Noop("20240406_b"), Noop("20240406_b"))
    assert migrations.registered_migrations() == {}
    with pytest.raises(MigrationNilError):
        migrations.must_register(Noop("20240405_a"), None)
    assert migrations.registered_migrations() == {}
    migrations.must_register(Noop("20240405_a"), Noop("20240406_b"))
    assert sorted(migrations.registered_migrations()) == ["20240405_a", "20240406_b"]


def test_registered_migrations_is_a_copy() -> None:
    migrations.register(Noop("20240405_a"))
    copy = migrations.registered_migrations()
    copy.clear()
    assert list(migrations.registered_migrations()) == ["20240405_a"]


def test_get_migrations_sorts_and_applies_every_filter() -> None:
    migrations.must_register(Noop("20240407_c"), Noop("20240405_a"), Noop("20240406_b"))
    assert [m.version for m in migrations.get_migrations()] == [
        "20240405_a",
        "20240406_b",
        "20240407_c",
    ]
    after_a = migrations.get_migrations(lambda v, m: v > "20240405_a")
    assert [m.version for m in after_a] == ["20240406_b", "20240407_c"]
    both = migrations.get_migrations(lambda v, m: v > "20240405_a", lambda v, m: "c" in v)
    assert [m.version for m in both] == ["20240407_c"]


def test_separate_registries_do_not_share_state() -> None:
    r1, r2 = Registry(), Registry()
    r1.register(Noop("20240405_a"))
    r2.register(Noop("20240405_a"))
    assert list(r1.registered()) == list(r2.registered()) == ["20240405_a"]
    assert migrations.registered_migrations() == {}
