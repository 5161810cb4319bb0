"""The verbs: status, up, down, mark_applied and create, as plain functions returning results.

Each verb loads the migrations directory, reads history and asks `plan` what to do; verbs that
write take the lease lock first and keep it (renewed) for the whole run.

A migration's `up`/`down` may accept a keyword `ctx` (`def up(self, db, ctx=None)`): it then
receives a MigrationContext with `settings` (resolved lazily), `log(msg)` for progress and
`check_lock()` that raises LockLostError if the lease was lost.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import re
import string
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo.database import Database

from backfill_migrations.discovery import LoadedMigration, discover
from backfill_migrations.errors import (
    InvalidDescriptionError,
    InvalidVersionFormatError,
    LockLostError,
    MigrationError,
    MigrationFailedError,
    NoMigrationsDirError,
    UnknownTargetError,
)
from backfill_migrations.history import History, format_error, read_history
from backfill_migrations.indexes import reporting_to
from backfill_migrations.lock import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_WAIT_SECONDS,
    LOCK_COLLECTION,
    Lease,
)
from backfill_migrations.plan import (
    Direction,
    Plan,
    needs_attention,
    plan_down,
    plan_up,
    status_rows,
)
from backfill_migrations.registry import MigrationContext, MigrationStatus, validate_version

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "migration.py.tmpl"
SLUG_PATTERN = re.compile(r"[a-z0-9_]+")  # fullmatch: `$` admits a final \n

logger = logging.getLogger(__name__)


def _log(message: str) -> None:
    logger.info("%s", message)


@dataclass(frozen=True)
class RunnerConfig:
    """Where migrations live, lock timings, and what migrations receive through `ctx`."""

    directory: Path | None = None  # None: every verb refuses (NoMigrationsDirError)
    lock_seconds: float = DEFAULT_LEASE_SECONDS
    lock_wait_seconds: float = DEFAULT_WAIT_SECONDS
    log: Callable[[str], None] = _log
    settings_factory: Callable[[], Any] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> RunnerConfig:
        """Directory and lock timings from the engine's Settings; the settings reach `ctx`."""
        directory = getattr(settings, "migrations_dir", None)
        base: dict[str, Any] = {
            "directory": Path(directory) if directory else None,
            "lock_seconds": settings.migration_lock_seconds,
            "lock_wait_seconds": settings.migration_lock_wait_seconds,
            "settings_factory": lambda: settings,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


@dataclass(frozen=True)
class StatusReport:
    """Every version's row, plus who holds the lock right now (if anyone)."""

    rows: list[MigrationStatus]
    lock_holder: dict[str, Any] | None = None

    def _with_state(self, state: str) -> list[str]:
        return [r.version for r in self.rows if r.state == state]

    @property
    def pending(self) -> list[str]:
        return self._with_state("pending")

    @property
    def running(self) -> list[str]:
        """`running` records while a live runner holds the lock: in progress, not broken."""
        return self._with_state("running") if self.lock_holder else []

    @property
    def failed(self) -> list[str]:
        interrupted = [] if self.lock_holder else self._with_state("running")
        return self._with_state("failed") + interrupted

    @property
    def drifted(self) -> list[str]:
        return [r.version for r in self.rows if r.checksum_drift]

    @property
    def missing(self) -> list[str]:
        return self._with_state("missing")

    @property
    def needs_attention(self) -> bool:
        return needs_attention(self.rows)


@dataclass(frozen=True)
class StepResult:
    """One migration that ran."""

    version: str
    direction: str
    description: str
    execution_time: float
    retry: bool = False


@dataclass(frozen=True)
class RunResult:
    """What `up`/`down` planned and (unless dry_run) did."""

    plan: Plan
    dry_run: bool
    done: list[StepResult] = field(default_factory=list)


def _load(config: RunnerConfig) -> dict[str, LoadedMigration]:
    if config.directory is None:
        raise NoMigrationsDirError()
    return {lm.version: lm for lm in discover(config.directory)}


def _accepts_ctx(fn: Callable[..., Any]) -> bool:
    params = inspect.signature(fn).parameters.values()
    return any(p.name == "ctx" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _lock_check(lease: Lease) -> Callable[[], None]:
    def check() -> None:
        if lease.lost:
            raise LockLostError()

    return check


def _run_steps(
    db: Database, config: RunnerConfig, lease: Lease, plan: Plan, loaded: dict[str, LoadedMigration]
) -> list[StepResult]:
    history = History(db, lease.confirm)
    done: list[StepResult] = []
    for step in plan.steps:
        lm = loaded[step.version]
        verb = (
            "re-applying"
            if step.retry
            else "applying"
            if step.direction is Direction.UP
            else "rolling back"
        )
        config.log(f"{verb} {step.version}: {step.description}")
        history.start(lm.available(), step.direction)
        ctx = MigrationContext(
            version=step.version,
            log=config.log,
            settings_factory=config.settings_factory,
            check_lock=_lock_check(lease),
        )
        fn: Callable[..., None] = (
            lm.migration.up if step.direction is Direction.UP else lm.migration.down
        )
        started = time.monotonic()
        try:
            with reporting_to(config.log):
                fn(db, ctx=ctx) if _accepts_ctx(fn) else fn(db)
        except Exception as exc:
            elapsed = time.monotonic() - started
            error = format_error(exc)
            history.failed(step.version, step.direction, error, elapsed)
            raise MigrationFailedError(
                step.version, step.direction.value, error, [d.version for d in done]
            ) from exc
        except KeyboardInterrupt:
            history.failed(step.version, step.direction, "interrupted by the operator", 0.0)
            raise
        elapsed = time.monotonic() - started
        try:
            if step.direction is Direction.UP:
                history.applied(lm.available(), elapsed)
            else:
                history.rolled_back(step.version, elapsed)
        except LockLostError:
            raise LockLostError(
                f"{step.version} ran but could not be recorded; it shows as interrupted "
                "and needs `migrate up --retry` after checking it;"
            ) from None
        config.log(
            f"{'applied' if step.direction is Direction.UP else 'rolled back'} "
            f"{step.version} in {elapsed:.2f}s"
        )
        done.append(
            StepResult(step.version, step.direction.value, step.description, elapsed, step.retry)
        )
    return done


def _lease(db: Database, config: RunnerConfig) -> Lease:
    return Lease(db, lease_seconds=config.lock_seconds, wait_seconds=config.lock_wait_seconds)


def status(db: Database, config: RunnerConfig | None = None) -> StatusReport:
    """Every migration's state, drift and order; reads only."""
    config = config or RunnerConfig()
    loaded = _load(config)
    rows = status_rows([lm.available() for lm in loaded.values()], read_history(db))
    holder = db[LOCK_COLLECTION].find_one({"_id": "lock"}, {"_id": 0, "owner": 0})
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if holder and holder.get("expires_at") and holder["expires_at"] <= now:
        holder = None
    return StatusReport(rows, holder)


def up(
    db: Database,
    config: RunnerConfig | None = None,
    *,
    to: str | None = None,
    dry_run: bool = False,
    retry: bool = False,
    allow_out_of_order: bool = False,
) -> RunResult:
    """Apply pending migrations (up to `to`); dry_run plans without touching the database."""
    config = config or RunnerConfig()
    loaded = _load(config)
    available = [lm.available() for lm in loaded.values()]

    def plan() -> Plan:
        return plan_up(
            available, read_history(db), to=to, retry=retry, allow_out_of_order=allow_out_of_order
        )

    if dry_run:
        return RunResult(plan(), dry_run=True)
    if to is not None and to not in loaded:
        raise UnknownTargetError(to, sorted(loaded))  # before waiting for the lock
    with _lease(db, config) as lease:
        # Plan only under the lock: a `running` record then means its runner is gone.
        plan_now = plan()
        return RunResult(plan_now, False, _run_steps(db, config, lease, plan_now, loaded))


def down(
    db: Database,
    config: RunnerConfig | None = None,
    *,
    steps: int | None = None,
    to: str | None = None,
    dry_run: bool = False,
) -> RunResult:
    """Roll back the last `steps` (default 1) applied migrations, or all after `to`."""
    config = config or RunnerConfig()
    loaded = _load(config)
    available = [lm.available() for lm in loaded.values()]
    if dry_run:
        return RunResult(plan_down(available, read_history(db), steps=steps, to=to), True)
    with _lease(db, config) as lease:
        plan = plan_down(available, read_history(db), steps=steps, to=to)
        return RunResult(plan, False, _run_steps(db, config, lease, plan, loaded))


def mark_applied(db: Database, version: str, config: RunnerConfig | None = None) -> None:
    """Record `version` applied without running it (operator fix-up; also re-baselines drift)."""
    config = config or RunnerConfig()
    loaded = _load(config)
    if version not in loaded:
        raise UnknownTargetError(version, sorted(loaded))
    with _lease(db, config) as lease:
        History(db, lease.confirm).applied(loaded[version].available(), 0.0, manual=True)
    config.log(f"marked {version} applied")


# Characters that end a line or a string literal in the generated module.
_LINE_BREAKING = ("Cc", "Zl", "Zp")


def _description_literal(description: str) -> str:
    """`description` as the text of a one-line "..." string and docstring in the template."""
    for char in description:
        if unicodedata.category(char) in _LINE_BREAKING:
            raise InvalidDescriptionError(char)
    return description.replace("\\", "\\\\").replace('"', "'")


def _class_name(slug: str) -> str:
    name = "".join(part.capitalize() for part in slug.split("_") if part)
    return name if name[:1].isalpha() else f"Migration{name}"


def create(
    slug: str,
    directory: Path | None = None,
    *,
    description: str | None = None,
    today: dt.date | None = None,
) -> Path:
    """Write `<directory>/<today>_<slug>.py` from the template and return its path."""
    if not SLUG_PATTERN.fullmatch(slug) or not slug.strip("_"):
        raise InvalidVersionFormatError(slug, "slug must be lower-case letters, digits and _")
    version = validate_version(f"{(today or dt.date.today()):%Y%m%d}_{slug}")
    if directory is None:
        raise NoMigrationsDirError()
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    path = directory / f"{version}.py"
    if path.exists():
        raise MigrationError(f"{path} already exists")
    text = string.Template(TEMPLATE_PATH.read_text()).substitute(
        version=version,
        description=_description_literal(description or slug.replace("_", " ")),
        class_name=_class_name(slug),
    )
    path.write_text(text)
    return path
