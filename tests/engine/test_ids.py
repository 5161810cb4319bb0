"""Which `_id`s a string-keyed source cannot tell apart (pure)."""

from __future__ import annotations

from bson import ObjectId

from backfill_engine.ids import id_string, string_twins


def test_int_and_its_decimal_string_are_twins() -> None:
    assert string_twins(5) == ["5"]
    assert 5 in string_twins("5")


def test_object_id_and_its_hex_are_twins() -> None:
    oid = ObjectId()
    assert string_twins(oid) == [str(oid)]
    assert oid in string_twins(str(oid))


def test_strings_that_no_other_type_prints_have_no_twin() -> None:
    for text in ("sku-1", "05", "+5", " 5", "5 ", "ABCDEF0123456789ABCDEF01", ""):
        assert [t for t in string_twins(text) if not isinstance(t, float)] == [], text


def test_twins_share_the_string_form() -> None:
    for value in (5, -12, ObjectId(), "77", str(ObjectId()), 2.5, "2.5"):
        for twin in string_twins(value):
            assert type(twin) is not type(value)
            assert id_string(twin) == id_string(value)


def test_bools_are_nobodys_twin() -> None:
    assert string_twins(True) == []
