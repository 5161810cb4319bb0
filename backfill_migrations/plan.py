"""Pure planning: from the migrations on disk and the history rows, decide what to do.

No database and no files here: every function takes plain values, so the rules (targets,
blocking failures, out-of-order, drift) are tested without a server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from backfill_migrations.errors import (
    MigrationBlockedError,
    MissingMigrationFileError,
    UnknownTargetError,
)
from backfill_migrations.registry import MigrationMetadata, MigrationStatus


class MigrationState(StrEnum):
    """States of a history record (there is no "dirty" flag: a state says what happened)."""

    RUNNING = "running"
    APPLIED = "applied"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


# Row states shown by `status` beyond the stored ones.
PENDING = "pending"
MISSING = "missing"  # recorded in history, module gone from disk


@dataclass(frozen=True)
class Available:
    """A migration found on disk."""

    version: str
    description: str
    checksum: str


@dataclass(frozen=True)
class HistoryRecord:
    """One `schema_migrations` document, as plain values."""

    version: str
    state: MigrationState
    checksum: str | None = None
    description: str = ""
    applied_at: dt.datetime | None = None
    execution_time: float | None = None
    error: str | None = None
    host: str | None = None
    pid: int | None = None
    direction: Direction = Direction.UP


@dataclass(frozen=True)
class Step:
    """Run one migration in one direction."""

    version: str
    direction: Direction
    description: str
    retry: bool = False


@dataclass(frozen=True)
class Plan:
    """What a run will do, plus what it deliberately leaves alone."""

    steps: tuple[Step, ...]
    skipped_out_of_order: tuple[str, ...] = ()
    drifted: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def _index(history: Iterable[HistoryRecord]) -> dict[str, HistoryRecord]:
    return {r.version: r for r in history}


def _applied(records: dict[str, HistoryRecord]) -> list[str]:
    return sorted(v for v, r in records.items() if r.state is MigrationState.APPLIED)


def drifted_versions(available: Sequence[Available], history: Iterable[HistoryRecord]) -> list[str]:
    """Applied versions whose module source changed since they ran."""
    records = _index(history)
    return [
        a.version
        for a in sorted(available, key=lambda a: a.version)
        if (r := records.get(a.version)) is not None
        and r.state is MigrationState.APPLIED
        and r.checksum is not None
        and r.checksum != a.checksum
    ]


def missing_versions(available: Sequence[Available], history: Iterable[HistoryRecord]) -> list[str]:
    """Applied versions whose module is no longer on disk."""
    on_disk = {a.version for a in available}
    records = _index(history)
    return [v for v in _applied(records) if v not in on_disk]


def _out_of_order(pending: Iterable[str], applied: Sequence[str]) -> set[str]:
    newest = max(applied, default=None)
    return {v for v in pending if newest is not None and v < newest}


def status_rows(
    available: Sequence[Available], history: Iterable[HistoryRecord]
) -> list[MigrationStatus]:
    """One row per version on disk or in history, in version order."""
    records = _index(history)
    by_version = {a.version: a for a in available}
    drift = set(drifted_versions(available, records.values()))
    applied = _applied(records)
    pending = [
        v for v in by_version if v not in records or records[v].state is MigrationState.ROLLED_BACK
    ]
    late = _out_of_order(pending, applied)
    rows = []
    for version in sorted(set(by_version) | set(records)):
        a, r = by_version.get(version), records.get(version)
        if r is None or r.state is MigrationState.ROLLED_BACK:
            state = PENDING
        elif a is None and r.state is MigrationState.APPLIED:
            state = MISSING
        else:
            state = r.state.value
        rows.append(
            MigrationStatus(
                version=version,
                description=(a.description if a else r.description if r else ""),
                applied=r is not None and r.state is MigrationState.APPLIED,
                applied_at=r.applied_at if r and r.state is MigrationState.APPLIED else None,
                state=state,
                checksum_drift=version in drift,
                out_of_order=version in late,
                metadata=(
                    MigrationMetadata(execution_time=r.execution_time, error=r.error) if r else None
                ),
            )
        )
    return rows


def needs_attention(rows: Iterable[MigrationStatus]) -> bool:
    """True when anything is pending, failed, interrupted, drifted or missing (for --exit-code)."""
    return any(r.state != MigrationState.APPLIED.value or r.checksum_drift for r in rows)


def _check_target(target: str | None, known: Iterable[str]) -> None:
    known_sorted = sorted(set(known))
    if target is not None and target not in known_sorted:
        raise UnknownTargetError(target, known_sorted)


def plan_up(
    available: Sequence[Available],
    history: Iterable[HistoryRecord],
    *,
    to: str | None = None,
    retry: bool = False,
    allow_out_of_order: bool = False,
) -> Plan:
    """Pending migrations up to `to` (inclusive), in version order.

    A `failed` record, or a `running` one (its runner died: we plan only while holding the
    lock), blocks the run unless `retry`, which re-runs those versions first-in-order.
    """
    records = _index(history)
    by_version = {a.version: a for a in available}
    _check_target(to, by_version)
    stuck = sorted(
        v for v, r in records.items() if r.state in (MigrationState.FAILED, MigrationState.RUNNING)
    )
    if stuck and not retry:
        r = records[stuck[0]]
        state = "interrupted" if r.state is MigrationState.RUNNING else r.state.value
        raise MigrationBlockedError(r.version, state, r.error)
    for v in stuck:
        if v not in by_version:
            raise MissingMigrationFileError(v)

    applied = _applied(records)
    pending = [
        v
        for v in sorted(by_version)
        if (v not in records or records[v].state is MigrationState.ROLLED_BACK)
        and (to is None or v <= to)
    ]
    late = _out_of_order(pending, applied)
    skipped = sorted(late) if not allow_out_of_order else []
    chosen = set(pending) - set(skipped)
    chosen |= {v for v in stuck if to is None or v <= to}
    steps = tuple(
        Step(v, Direction.UP, by_version[v].description, retry=v in stuck) for v in sorted(chosen)
    )
    return Plan(
        steps=steps,
        skipped_out_of_order=tuple(skipped),
        drifted=tuple(drifted_versions(available, records.values())),
        missing=tuple(missing_versions(available, records.values())),
    )


def plan_down(
    available: Sequence[Available],
    history: Iterable[HistoryRecord],
    *,
    steps: int | None = None,
    to: str | None = None,
) -> Plan:
    """Applied migrations to undo, newest first: the last `steps` (default 1) or all after `to`.

    `to` itself stays applied. Failed or interrupted records are left alone.
    """
    if steps is not None and to is not None:
        raise ValueError("give steps or to, not both")
    if steps is not None and steps < 1:
        raise ValueError("steps must be >= 1")
    records = _index(history)
    by_version = {a.version: a for a in available}
    _check_target(to, set(by_version) | set(records))
    applied = sorted(_applied(records), reverse=True)
    chosen = [v for v in applied if v > to] if to is not None else applied[: steps or 1]
    for v in chosen:
        if v not in by_version:
            raise MissingMigrationFileError(v)
    return Plan(
        steps=tuple(Step(v, Direction.DOWN, by_version[v].description) for v in chosen),
        drifted=tuple(drifted_versions(available, records.values())),
    )
