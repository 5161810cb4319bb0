"""`bench.monitor_mode` measures both monitoring modes on fresh servers (numbers never asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.monitor_mode import MODES, measure


def test_a_round_reports_idle_share_and_per_update_costs(tmp_path: Path) -> None:
    assert set(MODES) == {"stream", "poll"}
    # One mode: the other differs only in the URL option it names.
    row = measure("stream", clients=2, updates=20, log_dir=tmp_path, idle_seconds=0.5)
    assert set(row) == {"idle_cpu_share", "cpu_ms", "wall_ms"}
    assert row["cpu_ms"] > 0 and row["wall_ms"] > 0 and row["idle_cpu_share"] >= 0
