"""The bench harness runs end to end on a tiny size; numbers are never asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import parse, run


@pytest.mark.timeout(300)
def test_bench_harness_produces_rows(tmp_path: Path) -> None:
    opts = parse(
        [
            "--products", "600",
            "--naive-products", "10",
            "--processes", "1",
            "--latencies", "0",
            "--pools", "prefork",
            "--concurrency", "1",
            "--results-dir", str(tmp_path / "results"),
            "--doc", str(tmp_path / "benchmarks.md"),
            "--chart", str(tmp_path / "benchmarks.png"),
            "--log-dir", str(tmp_path / "logs"),
        ]
    )  # fmt: skip
    result = run(opts, say=lambda line: None)

    scenarios = {r.scenario for r in result.rows}
    assert {"ceiling", "naive", "system", "rerun"} <= scenarios
    assert all(r.products > 0 and r.seconds > 0 for r in result.rows)
    body = json.loads(result.json_path.read_text())
    assert body["rows"] and body["environment"]["cpu_count"]
    assert (tmp_path / "benchmarks.png").stat().st_size > 0
    doc = (tmp_path / "benchmarks.md").read_text()
    assert "| scenario |" in doc and "Per-batch phases" in doc
    system = [r for r in result.rows if r.scenario in ("system", "rerun")]
    # Each configuration is compared with a ceiling measured on the server as it was then.
    assert all(r.ceiling_ps and r.x_ceiling for r in system)
