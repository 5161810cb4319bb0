"""The validator-cost probe runs, writes every document in both modes, and `make bench`
writes what it measured into docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

from bench import report, validator_cost
from bench.cli import parse


def test_the_probe_measures_both_modes_on_a_real_server() -> None:
    # measure raises NotAllWritten unless each round changed all of its documents
    result = validator_cost.measure(products=200, rounds=1)
    assert set(result) == {"plain", "validated"}
    assert all(len(v) == 1 and v[0] > 0 for v in result.values())


def test_the_section_shows_every_round_and_the_ratio_of_the_least(tmp_path: Path) -> None:
    result = {"plain": [0.5, 0.4], "validated": [1.0, 0.9]}
    block = validator_cost.section(result, 10_000)
    assert "| plain | 0.500, 0.400 | 0.400 |" in block
    assert "| validated | 1.000, 0.900 | 0.900 |" in block
    assert "**2.25x**" in block
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept\n")
    report.write_between(doc, validator_cost.BEGIN, validator_cost.END, block)
    again = validator_cost.section({"plain": [1.0], "validated": [3.0]}, 10_000)
    report.write_between(doc, validator_cost.BEGIN, validator_cost.END, again)
    text = doc.read_text()
    assert "kept" in text and "**3.00x**" in text and "2.25x" not in text  # replaced, once


def test_the_bench_runs_the_probe_unless_told_not_to() -> None:
    assert parse([]).with_validator_cost
    assert not parse(["--no-validator-cost"]).with_validator_cost
