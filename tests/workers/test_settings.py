import pytest

from backfill_engine.redact import redact_text, redact_url
from backfill_engine.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_HTTP_REQUEST_DEADLINE,
    Settings,
    SettingsError,
)


def test_defaults_when_environment_is_empty() -> None:
    s = Settings.from_env({})
    assert s.mongo_url is None and s.redis_url is None
    assert s.batch_size == DEFAULT_BATCH_SIZE
    assert s.subchunk_size == 100


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("BACKFILL_BATCH_SIZE", "0", "BACKFILL_BATCH_SIZE must be between"),
        ("BACKFILL_BATCH_SIZE", "-1", "BACKFILL_BATCH_SIZE must be between"),
        ("BACKFILL_BATCH_SIZE", "1000000000", "BACKFILL_BATCH_SIZE must be between"),
        ("BACKFILL_BATCH_SIZE", "ten", "BACKFILL_BATCH_SIZE must be an integer"),
        ("BACKFILL_RATE", "0", "BACKFILL_RATE must be between"),
        ("BACKFILL_SUBCHUNK_SIZE", "1001", "BACKFILL_SUBCHUNK_SIZE must be between"),
        ("BACKFILL_READ_IDS", "-1", "BACKFILL_READ_IDS must be between"),
        ("MONGO_URL", "http://x", "MONGO_URL must start with mongodb://"),
        ("REDIS_URL", "mongodb://x", "REDIS_URL must start with"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env({name: value})


def test_repr_and_errors_never_show_secrets() -> None:
    s = Settings.from_env(
        {
            "MONGO_URL": "mongodb://app:m0ngo-pw@db.example:27017/",
            "REDIS_URL": "redis://:r3dis-pw@cache:6379/0",
            "CATALOG_TOKEN": "tok-123456",
            "FLOWER_BASIC_AUTH": "admin:fl0wer-pw",
        }
    )
    shown = repr(s)
    for secret in ("m0ngo-pw", "r3dis-pw", "tok-123456", "fl0wer-pw"):
        assert secret not in shown
        assert secret in s.secrets or secret in ":".join(s.secrets)
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"MONGO_URL": "http://u:hunter22@x/"})
    assert "hunter22" not in str(err.value)


def test_redaction_of_urls_and_free_text() -> None:
    assert redact_url("mongodb://u:pw@h:1/db?x=1") == "mongodb://u:***@h:1/db?x=1"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    text = "failed: connect mongodb://u:pw@h:1/ and token abc123 leaked"
    assert (
        redact_text(text, ("abc123",))
        == "failed: connect mongodb://u:***@h:1/ and token *** leaked"
    )


def test_to_env_round_trips() -> None:
    s = Settings.from_env(
        {
            "MONGO_URL": "mongodb://h:1/",
            "BACKFILL_LEASE_SECONDS": "7",
            "BACKFILL_READ_IDS": "25",
            "CATALOG_TOKEN": "t0ken",
        }
    )
    assert s.read_ids == 25
    assert Settings.from_env(s.to_env()) == s


def test_catalog_request_deadline_is_validated_and_passed_on() -> None:
    assert Settings.from_env({}).http_request_deadline == DEFAULT_HTTP_REQUEST_DEADLINE == 30
    s = Settings.from_env({"BACKFILL_HTTP_REQUEST_DEADLINE": "12.5"})
    assert s.http_request_deadline == 12.5
    assert s.to_env()["BACKFILL_HTTP_REQUEST_DEADLINE"] == "12.5"
    for bad, fragment in (
        ("0", "must be between"),
        ("-3", "must be between"),
        ("soon", "must be a number"),
    ):
        with pytest.raises(SettingsError, match=f"BACKFILL_HTTP_REQUEST_DEADLINE {fragment}"):
            Settings.from_env({"BACKFILL_HTTP_REQUEST_DEADLINE": bad})
