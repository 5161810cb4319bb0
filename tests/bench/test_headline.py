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
