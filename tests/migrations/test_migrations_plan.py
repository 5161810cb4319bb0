"""The pure planner: ordering, targets, blocking records, out-of-order, drift (no server)."""

from __future__ import annotations

import pytest

from backfill_migrations import (
    MigrationBlockedError,
    MigrationMetadata,
    MissingMigrationFileError,
    UnknownTargetError,
)
from backfill_migrations.plan import (
    Available,
    Direction,
    HistoryRecord,
    MigrationState,
    needs_attention,
    plan_down,
    plan_up,
    status_rows,
)

V1, V2, V3 = "20240401_one", "20240402_two", "20240403_three"
DISK = [Available(v, f"desc {v}", f"sum-{v}") for v in (V3, V1, V2)]  # any order on input


def rec(version: str, state: MigrationState, checksum: str | None = None, **kw) -> HistoryRecord:
    return HistoryRecord(version, state, checksum or f"sum-{version}", **kw)


def versions(plan) -> list[str]:
    return [s.version for s in plan.steps]


def test_up_applies_everything_pending_in_version_order() -> None:
    plan = plan_up(DISK, [])
    assert versions(plan) == [V1, V2, V3]
    assert all(s.direction is Direction.UP and not s.retry for s in plan.steps)


def test_up_to_target_is_inclusive_and_skips_applied() -> None:
    assert versions(plan_up(DISK, [], to=V2)) == [V1, V2]
    assert versions(plan_up(DISK, [rec(V1, MigrationState.APPLIED)], to=V2)) == [V2]
    assert versions(plan_up(DISK, [rec(V1, MigrationState.APPLIED)], to=V1)) == []


def test_unknown_target_is_an_error_naming_it() -> None:
    with pytest.raises(UnknownTargetError, match="20990101_nope"):
        plan_up(DISK, [], to="20990101_nope")
    with pytest.raises(UnknownTargetError, match="garbage"):
        plan_down(DISK, [rec(V1, MigrationState.APPLIED)], to="garbage")


def test_rolled_back_versions_are_pending_again() -> None:
    history = [rec(V1, MigrationState.APPLIED), rec(V2, MigrationState.ROLLED_BACK)]
    assert versions(plan_up(DISK, history)) == [V2, V3]


def test_failed_record_blocks_until_retry() -> None:
    history = [rec(V1, MigrationState.APPLIED), rec(V2, MigrationState.FAILED, error="boom")]
    with pytest.raises(MigrationBlockedError, match="boom") as err:
        plan_up(DISK, history)
    assert err.value.version == V2 and err.value.state == "failed"
    plan = plan_up(DISK, history, retry=True)
    assert versions(plan) == [V2, V3]
    assert [s.retry for s in plan.steps] == [True, False]


def test_running_record_is_reported_as_interrupted_and_blocks() -> None:
    history = [rec(V1, MigrationState.RUNNING)]
    with pytest.raises(MigrationBlockedError, match="interrupted"):
        plan_up(DISK, history)
    assert versions(plan_up(DISK, history, retry=True)) == [V1, V2, V3]


def test_retry_of_a_version_whose_file_is_gone_is_refused() -> None:
    with pytest.raises(MissingMigrationFileError):
        plan_up(DISK, [rec("20240301_gone", MigrationState.FAILED)], retry=True)


def test_out_of_order_pending_is_skipped_unless_allowed() -> None:
    history = [rec(V2, MigrationState.APPLIED)]
    plan = plan_up(DISK, history)
    assert versions(plan) == [V3]
    assert plan.skipped_out_of_order == (V1,)
    allowed = plan_up(DISK, history, allow_out_of_order=True)
    assert versions(allowed) == [V1, V3]
    assert allowed.skipped_out_of_order == ()


def test_drift_and_missing_modules_are_reported() -> None:
    history = [
        rec(V1, MigrationState.APPLIED, checksum="edited-since"),
        rec("20240301_gone", MigrationState.APPLIED),
    ]
    plan = plan_up(DISK, history)
    assert plan.drifted == (V1,)
    assert plan.missing == ("20240301_gone",)


def test_down_defaults_to_the_newest_applied() -> None:
    history = [rec(v, MigrationState.APPLIED) for v in (V1, V2, V3)]
    plan = plan_down(DISK, history)
    assert versions(plan) == [V3]
    assert plan.steps[0].direction is Direction.DOWN


def test_down_steps_and_to() -> None:
    history = [rec(v, MigrationState.APPLIED) for v in (V1, V2, V3)]
    assert versions(plan_down(DISK, history, steps=2)) == [V3, V2]
    assert versions(plan_down(DISK, history, steps=10)) == [V3, V2, V1]
    assert versions(plan_down(DISK, history, to=V1)) == [V3, V2]
    assert versions(plan_down(DISK, history, to=V3)) == []
    with pytest.raises(ValueError):
        plan_down(DISK, history, steps=0)
    with pytest.raises(ValueError):
        plan_down(DISK, history, steps=1, to=V1)


def test_down_leaves_failed_records_alone() -> None:
    history = [rec(V1, MigrationState.APPLIED), rec(V2, MigrationState.FAILED)]
    assert versions(plan_down(DISK, history)) == [V1]


def test_down_needs_the_module() -> None:
    history = [rec("20240501_gone", MigrationState.APPLIED)]
    with pytest.raises(MissingMigrationFileError, match="20240501_gone"):
        plan_down(DISK, history)


def test_status_rows_show_every_state() -> None:
    history = [
        rec(V1, MigrationState.APPLIED, checksum="edited"),
        rec(V2, MigrationState.FAILED, error="boom", execution_time=1.5),
        rec("20240301_gone", MigrationState.APPLIED),
    ]
    rows = {r.version: r for r in status_rows(DISK, history)}
    assert list(rows) == ["20240301_gone", V1, V2, V3]
    assert rows["20240301_gone"].state == "missing"
    assert rows[V1].applied and rows[V1].checksum_drift
    assert rows[V2].state == "failed" and not rows[V2].applied
    assert rows[V2].metadata == MigrationMetadata(execution_time=1.5, error="boom")
    assert rows[V3].state == "pending" and not rows[V3].out_of_order
    assert needs_attention(rows.values())


def test_status_flags_out_of_order_and_all_clear() -> None:
    rows = status_rows(DISK, [rec(V2, MigrationState.APPLIED)])
    assert [r.version for r in rows if r.out_of_order] == [V1]
    clean = status_rows(DISK, [rec(v, MigrationState.APPLIED) for v in (V1, V2, V3)])
    assert not needs_attention(clean)
