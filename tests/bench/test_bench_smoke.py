"""The bench harness runs end to end on a tiny size; numbers are never asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import parse, run
from bench.report import README_BEGIN, README_END


@pytest.mark.timeout(420)
def test_bench_harness_produces_rows(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Benchmarks\n\n{README_BEGIN}\nold\n{README_END}\n\n## Next\n")
    opts = parse(
        [
            "--products", "600",
            "--naive-products", "10",
            "--processes", "1",
            "--latencies", "0",
            "--pools", "prefork",
            "--concurrency", "1",
            "--no-scaling",  # the next test runs the scaling series
            "--results-dir", str(tmp_path / "results"),
            "--doc", str(tmp_path / "benchmarks.md"),
            "--chart", str(tmp_path / "benchmarks.png"),
            "--readme", str(readme),
            "--log-dir", str(tmp_path / "logs"),
            "--no-auto-rate",
            "--peer-latencies", "0",
            "--no-journal-cost",  # tests/bench/test_journal_cost.py runs it
            "--no-validator-cost",  # tests/bench/test_validator_cost.py runs it
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

    # Our own CPU and the commands per batch, on the first run and the rerun.
    for r in system:
        assert r.own_cpu_ms_per_product is not None and r.own_cpu_ms_per_product > 0
        assert r.mongo_cmds_per_batch and r.mongo_top.get("update")
        assert r.redis_cmds_per_batch
    assert "Our own CPU and commands per batch" in doc
    assert any(t["target"].startswith("our own CPU") for t in body["targets"])
    # The peer series ran in the same run, on its own rows, into its own section.
    [pair] = body["environment"]["peer"]
    assert pair["engine"]["products"] == pair["peer"]["products"] == 600
    assert "## Peer: the engine next to a hand-written Celery group" in doc


@pytest.mark.timeout(420)
def test_bench_scaling_series_reports_curve_and_targets(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Benchmarks\n\n{README_BEGIN}\nold\n{README_END}\n\n## Next\n")
    opts = parse(
        [
            "--products", "500",
            "--naive-products", "5",
            "--processes", "1",
            "--latencies", "0",
            "--pools", "prefork",
            "--concurrency", "1",
            "--no-single-slot",
            "--no-rerun",
            "--no-memory-check",
            "--no-floor",
            "--scaling-products", "1000",
            "--scaling-latencies", "5",
            "--scaling-slots", "1,2",
            "--scaling-pools", "prefork,threads",
            "--results-dir", str(tmp_path / "results"),
            "--doc", str(tmp_path / "benchmarks.md"),
            "--chart", str(tmp_path / "benchmarks.png"),
            "--readme", str(readme),
            "--log-dir", str(tmp_path / "logs"),
            "--no-auto-rate",
            "--no-peer",
            "--no-journal-cost",
            "--no-validator-cost",
        ]
    )  # fmt: skip
    result = run(opts, say=lambda line: None)

    # One curve per pool, one row per slot count, with the mix stated and a ceiling.
    assert {(r.pool, r.slots) for r in result.scaling} == {
        ("prefork", 1), ("prefork", 2), ("threads", 1), ("threads", 2)
    }  # fmt: skip
    assert {(r.pool, r.processes, r.concurrency) for r in result.scaling} >= {
        ("prefork", 1, 2), ("threads", 1, 2)
    }  # fmt: skip
    assert all(r.scenario == "scaling" and r.products == 1000 for r in result.scaling)
    assert all(r.ceiling_ps and r.cpu_s.get("secantusdb") is not None for r in result.scaling)
    assert "scaling" not in {r.scenario for r in result.rows}  # the main table stays as it was

    body = json.loads(result.json_path.read_text())
    assert len(body["scaling"]) == 4
    steps = body["scaling_doublings"]
    assert {(s["pool"], s["from_slots"], s["slots"]) for s in steps} == {
        ("prefork", 1, 2), ("threads", 1, 2)
    }  # fmt: skip
    for s in steps:
        assert s["met"] in (True, False, None) and s["why"]
        assert s["binds"] in ("database ceiling", "rate cap") and s["bound_ps"] > 0
    assert {f["pool"] for f in body["scaling_flattening"]} == {"prefork", "threads"}
    scaling_targets = [t for t in body["targets"] if t["target"].startswith("scaling ")]
    assert len(scaling_targets) == 2

    doc = (tmp_path / "benchmarks.md").read_text()
    assert "## Scaling where the work waits on the API" in doc
    assert "| pool | latency | slots | procs x conc |" in doc
    assert "### Each doubling against the target" in doc and "| 1 -> 2 |" in doc
    assert "scaling prefork at 5 ms: efficiency >= 0.8" in doc
    assert "scaling threads at 5 ms: efficiency >= 0.8" in doc
    assert "](benchmarks-scaling.png)" in doc
    assert (tmp_path / "benchmarks-scaling.png").stat().st_size > 0

    text = readme.read_text()
    assert "old" not in text and text.endswith("## Next\n")
    assert "| pool | latency | 1 slot | 2 slots |" in text and "| target |" in text
