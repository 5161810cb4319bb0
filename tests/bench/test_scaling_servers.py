"""The scaling series gives each curve servers of its own (pure: the runs are stubbed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench import scaling
from bench.scenarios import Bench, Row


def test_every_curve_runs_on_the_bench_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = Bench(None, [], tmp_path, 1.0, 500)  # type: ignore[arg-type]
    opened: list[str] = []
    ran: list[tuple[str, float, str]] = []

    @contextmanager
    def bench_for(tag: str) -> Iterator[Bench]:
        opened.append(tag)
        yield Bench(None, [], tmp_path / tag, 1.0, 500)  # type: ignore[arg-type]

    def series(b: Bench, n: int, latency: float, pool: str, *rest: Any) -> list[Row]:
        ran.append((pool, latency, b.log_dir.name))
        return [Row("scaling", pool, n, 1.0, latency_ms=latency, pool=pool)]

    monkeypatch.setattr(scaling, "series", series)
    rows = scaling.run_all(
        shared, 1000, (150.0, 300.0), ("prefork", "threads"), (1, 2), {}, bench_for=bench_for
    )
    assert opened == [
        "scaling-prefork-150ms",
        "scaling-threads-150ms",
        "scaling-prefork-300ms",
        "scaling-threads-300ms",
    ]
    assert [tag for _, _, tag in ran] == opened  # each curve on its own, none on `shared`
    assert [(p, lat) for p, lat, _ in ran] == [
        ("prefork", 150.0), ("threads", 150.0), ("prefork", 300.0), ("threads", 300.0)
    ]  # fmt: skip
    assert len(rows) == 4

    ran.clear()
    scaling.run_all(shared, 1000, (150.0,), ("prefork",), (1,), {})
    assert ran == [("prefork", 150.0, tmp_path.name)]  # without bench_for: the shared servers
