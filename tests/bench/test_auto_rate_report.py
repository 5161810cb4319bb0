"""The `--rate auto` series' arithmetic and doc section (pure; the series runs in make bench)."""

from __future__ import annotations

from pathlib import Path

from bench.auto_rate import BEGIN, END, LIMIT, UNTESTED, measure, write_section
from catalog_service.limiters import SCHEMES


def snap(ok: int, throttled: int) -> dict[str, object]:
    return {"requests": ok + throttled, "by_status": {"200": ok, "429": throttled}}


def test_window_rate_and_429_share_decide_met_or_missed() -> None:
    n = int(LIMIT) * 40  # good answers in a 40 s window at exactly the limit
    good = measure(400.0, snap(800, 5), snap(800 + n - 40, 5 + 3), 40.0, {"current": 19.0})
    assert good["ok_per_s"] == LIMIT - 1 and good["answered_429"] == 3 and good["met"]
    slow = measure(4.0, snap(0, 0), snap(int(n * 0.8), 0), 40.0, {})
    assert slow["x_limit"] == 0.8 and not slow["met"]
    throttled = measure(4.0, snap(0, 0), snap(n, n // 50), 40.0, {})
    assert throttled["share_429"] > 0.01 and not throttled["met"]
    assert (good["verdict"], slow["verdict"], throttled["verdict"]) == (
        "met",
        UNTESTED,
        "missed",
    )  # the slow run never met a 429: its workers never reached the limit


def test_a_run_throttled_only_before_the_window_is_missed_not_untested() -> None:
    n = int(LIMIT) * 40
    low = measure(400.0, snap(100, 30), snap(100 + n // 2, 30), 40.0, {"current": 9.0})
    assert not low["met"] and low["verdict"] == "missed" and low["answered_429_run"] == 30


def test_section_is_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# head\n\n{BEGIN}\nstale numbers\n{END}\n\ntail\n")
    ok = int(LIMIT) * 40
    row = measure(400.0, snap(0, 0), snap(ok, 2), 40.0, {"current": 19.5, "reason": "probe"})
    write_section(doc, [row])
    text = doc.read_text()
    assert text.startswith("# head") and text.rstrip().endswith("tail")
    assert "stale numbers" not in text and f"| 400/s | {LIMIT:.1f} |" in text and "| met |" in text


def test_each_scheme_gets_its_own_rows(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    ok = int(LIMIT) * 40
    rows = [
        measure(start, snap(0, 0), snap(ok, 1), 40.0, {"current": 19.0}, scheme)
        for scheme in SCHEMES
        for start in (200.0, 2.0)
    ]
    write_section(doc, rows)
    text = doc.read_text()
    assert "## `--rate auto` by limiter scheme" in text
    for scheme in SCHEMES:
        assert f"| {scheme} | 200/s |" in text and f"| {scheme} | 2/s |" in text
