"""The peer series' run plan and arithmetic: mirrored order, means, a server per run (pure)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench import peer
from bench.peer import compare, run_order, run_series
from bench.report import peer_section
from bench.scenarios import Bench, Row, SystemConfig


def row(scenario: str, seconds: float, write_s: float, n: int = 1000) -> Row:
    return Row(
        scenario,
        scenario,
        n,
        seconds,
        latency_ms=0.0,
        pool="prefork",
        processes=2,
        concurrency=2,
        batches=n // 500,
        timings={"read_s": 0.1, "write_s": write_s, "total_s": write_s + 0.2},
    )


def test_runs_come_in_mirrored_pairs_and_the_first_side_alternates_per_latency() -> None:
    assert run_order(0, 2) == ("engine", "peer", "peer", "engine")
    assert run_order(1, 2) == ("peer", "engine", "engine", "peer")
    assert run_order(0, 1) == ("engine", "peer")
    assert run_order(0, 3) == ("engine", "peer", "peer", "engine", "engine", "peer")


def test_three_sides_mirror_too() -> None:
    sides = ("engine", "peer", "separate")
    assert run_order(0, 2, sides) == ("engine", "peer", "separate", "separate", "peer", "engine")
    assert run_order(1, 2, sides) == ("separate", "peer", "engine", "engine", "peer", "separate")
    assert run_order(0, 2, ("engine", "peer")) == run_order(0, 2)


def test_the_writes_apart_are_compared_with_the_same_peer_runs() -> None:
    engines = [row("system", 2.0, 1.5), row("system", 2.0, 1.5)]  # 500/s
    peers = [row("peer", 1.0, 0.3), row("peer", 1.0, 0.5)]  # 1000/s
    apart = [row("system", 1.25, 0.9), row("system", 1.25, 1.1)]  # 800/s
    for r, cpu in zip([*engines, *peers, *apart], (1.0, 1.2, 0.5, 0.7, 0.8, 0.8), strict=True):
        r.cpu_s = {"secantusdb": cpu}
    pair = compare(engines, peers, apart)
    assert pair["ratio"] == 0.5  # judged on the engine as it ships
    sep = pair["separate"]
    assert (sep["engine_ps"], sep["ratio"], sep["runs_ps"]) == (800.0, 0.8, [800.0, 800.0])
    assert sep["write_ms"] == 1000.0 and sep["db_ms_per_product"] == 0.8
    assert pair["db_ms_per_product"] == {"engine": 1.1, "peer": 0.6}
    text = peer_section([pair])
    assert "| 0 ms | engine, one client bulkWrite | 500 | 0.50 | 500, 500 | 1500.0 |" in text
    apart_row = "| 0 ms | engine, `BACKFILL_CLIENT_BULK_WRITE=0` | 800 | 0.80 | 800, 800 | 1000.0 |"
    assert apart_row in text
    assert "| 0 ms | peer | 1,000 | 1.00 | 1,000, 1,000 | 400.0 |" in text
    assert "engine, peer, apart, apart, peer, engine" in text  # the order they ran in
    plain = peer_section([compare(engines, peers)])
    assert "writes two ways" not in plain and "apart, apart" not in plain


def test_each_side_is_the_mean_of_its_runs_and_the_ratio_is_theirs() -> None:
    engines = [row("system", 1.0, 0.5), row("system", 2.0, 1.5)]  # 1000/s and 500/s
    peers = [row("peer", 1.0, 0.3), row("peer", 1.0, 0.5)]  # 1000/s twice
    pair = compare(engines, peers)
    assert (pair["engine_ps"], pair["peer_ps"], pair["ratio"]) == (750.0, 1000.0, 0.75)
    assert pair["runs_ps"] == {"engine": [1000.0, 500.0], "peer": [1000.0, 1000.0]}
    assert not pair["met"]
    assert pair["phases"]["write_s"] == {"engine_ms": 1000.0, "peer_ms": 400.0}
    assert pair["phases"]["lease_s"] == {"engine_ms": None, "peer_ms": None}
    assert len(pair["engine_runs"]) == len(pair["peer_runs"]) == 2
    text = peer_section([pair])
    assert "| 0 ms | 750 | 1,000 | 0.75 | 1,000, 500 / 1,000, 1,000 |" in text
    assert "2 runs each per latency, in mirrored order" in text


def test_every_run_gets_servers_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = Bench(None, [], tmp_path, 1.0, 500)  # type: ignore[arg-type]
    opened: list[str] = []
    ran_on: list[tuple[str, str]] = []

    @contextmanager
    def bench_for(tag: str) -> Iterator[Bench]:
        opened.append(tag)
        yield Bench(None, [], tmp_path / tag, 1.0, 500)  # type: ignore[arg-type]

    def on(who: str, seconds: float) -> Any:
        def run(b: Bench, n: int, cfg: SystemConfig, **kw: Any) -> Any:
            assert b is not shared
            ran_on.append((who, b.log_dir.name))
            r = row("system" if who == "engine" else "peer", seconds, 0.1, n)
            return [r] if who == "engine" else r

        return run

    monkeypatch.setattr(peer, "ceiling", lambda b, n: row("ceiling", 0.5, 0.0, n))
    monkeypatch.setattr(peer, "system", on("engine", 2.0))
    monkeypatch.setattr(peer, "peer_run", on("peer", 1.0))
    pairs = run_series(shared, 1000, (0.0, 150.0), 2, 2, say=lambda m: None, bench_for=bench_for)

    assert len(opened) == len(set(opened)) == 8  # four runs per latency, each its own
    assert [who for who, _ in ran_on] == [*run_order(0, 2), *run_order(1, 2)]
    assert [tag for _, tag in ran_on] == opened
    assert [p["ratio"] for p in pairs] == [0.5, 0.5]
    assert all(p["engine"]["ceiling_ps"] == 2000.0 for p in pairs)
    assert all("separate" not in p for p in pairs)


def test_the_writes_apart_run_where_asked_with_the_client_bulk_write_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = Bench(None, [], tmp_path, 1.0, 500)  # type: ignore[arg-type]
    ran: list[tuple[float, str]] = []

    def engine(b: Bench, n: int, cfg: SystemConfig, **kw: Any) -> list[Row]:
        together = kw.get("client_bulk_write", True)
        ran.append((cfg.latency_ms, "engine" if together else "separate"))
        return [row("system", 2.0 if together else 1.25, 0.1, n)]

    def hand(b: Bench, n: int, cfg: SystemConfig, **kw: Any) -> Row:
        ran.append((cfg.latency_ms, "peer"))
        return row("peer", 1.0, 0.1, n)

    monkeypatch.setattr(peer, "ceiling", lambda b, n: row("ceiling", 0.5, 0.0, n))
    monkeypatch.setattr(peer, "system", engine)
    monkeypatch.setattr(peer, "peer_run", hand)
    pairs = run_series(shared, 1000, (0.0, 150.0), 2, 2, say=lambda m: None, separate_writes=(0.0,))
    sides = ("engine", "peer", "separate")
    assert [who for lat, who in ran if lat == 0.0] == list(run_order(0, 2, sides))
    assert [who for lat, who in ran if lat == 150.0] == list(run_order(1, 2))
    assert pairs[0]["separate"]["ratio"] == 0.8 and "separate" not in pairs[1]
