"""The README's generated headline carries every series' target: peer, `--rate auto`, journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import README_BEGIN, README_END, series_targets, write_readme


def _pair(latency: float, ratio: float) -> dict[str, Any]:
    return {
        "latency_ms": latency,
        "processes": 2,
        "concurrency": 2,
        "engine_ps": 900.0 * ratio,
        "peer_ps": 900.0,
        "ratio": ratio,
        "met": ratio >= 0.9,
    }


def _auto(scheme: str, x_limit: float, share_429: float, met: bool) -> dict[str, Any]:
    return {"scheme": scheme, "x_limit": x_limit, "share_429": share_429, "met": met}


def test_each_series_is_one_target_row_with_its_verdict() -> None:
    rows = series_targets(
        [_pair(0.0, 0.75), _pair(150.0, 0.93)],
        [_auto("fixed-window", 0.97, 0.002, True), _auto("token-bucket", 0.88, 0.02, False)],
        {"slowdown": 0.021, "target_slowdown": 0.15, "met": True},
    )

    assert [r["met"] for r in rows] == [False, True, False, True]
    assert rows[0]["target"] == "engine >= 0.9 x a hand-written Celery peer (0 ms)"
    assert rows[0]["measured"] == "0.75x (2xprefork(2): 675 vs 900 products/s)"
    assert "fixed-window, token-bucket" in rows[2]["target"]
    assert rows[2]["measured"] == "0.88-0.97 x R, at most 2.00 % 429s (2 runs)"
    assert rows[3]["measured"] == "2.1 % slower"


def test_a_series_not_run_adds_no_row() -> None:
    assert series_targets([], [], None) == []
    assert series_targets([], [], {"slowdown": None, "target_slowdown": 0.15, "met": None}) == []


def test_the_readme_headline_lists_them_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{README_BEGIN}\nstale\n{README_END}\n\nrest\n")

    write_readme(
        readme, [], [], [], {"rate_per_second": 2000.0}, peer=[_pair(150.0, 0.74)], auto_rows=[]
    )

    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro") and text.rstrip().endswith("rest")
    assert "| engine >= 0.9 x a hand-written Celery peer (150 ms) | 0.74x" in text
    assert "| **no** |" in text


def test_the_results_table_has_the_ceiling_naive_and_each_latency_s_extremes() -> None:
    from bench.report import results_summary
    from bench.scenarios import Row, with_ratios

    def run(scenario: str, procs: int, latency: float, seconds: float, writes: int) -> Row:
        return Row(
            scenario, "x", 1000, seconds, latency_ms=latency, pool="prefork", processes=procs,
            concurrency=2, writes=writes, ceiling_ps=2000.0,
        )  # fmt: skip

    rows = with_ratios(
        [
            Row("ceiling", "ceiling", 1000, 0.5, writes=1000),
            Row("naive", "naive", 100, 1.0, latency_ms=0.0, processes=1, writes=100),
            run("system", 1, 0.0, 2.0, 1000),
            run("system", 2, 0.0, 1.0, 1000),
            run("system", 4, 0.0, 1.25, 1000),
            run("rerun", 1, 0.0, 0.5, 0),
        ]
    )

    table = results_summary(rows)

    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [line.split(" | ")[1] for line in lines[1:]] == [
        "-",
        "1 process",
        "2 x prefork(2)",  # the fastest first run at 0 ms
        "1 x prefork(2)",  # the slowest; the middle one is left to docs/benchmarks.md
        "1 x prefork(2)",
    ]
    assert (
        "| mongo-backfill, first run | 2 x prefork(2) | 0 ms | 1,000 | 0.50 | 10.0 | 1,000 |"
        in table
    )
    assert "| rerun, nothing changed | 1 x prefork(2) | 0 ms | 2,000 | 1.00 | 20.0 | 0 |" in table
