"""The journal series on a tiny size: real workers, a run with and one without the journal,
the journal's size and a revert of the journaled run.

Numbers are never asserted against targets here: what is checked is that the journaled run
wrote a journal the unjournaled one did not, that the revert restored every product, and
that the doc section reports what was measured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench import journal_cost
from bench.cli import parse
from bench.data import product_docs
from bench.report import JOURNAL_BEGIN, JOURNAL_END, write_journal
from bench.scenarios import Bench, SystemConfig, fresh_bench
from bench.servers import Servers, start_servers

PRODUCTS = 1000


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = start_servers(tmp_path_factory.mktemp("journal-bench"))
    yield s
    s.close()


@pytest.mark.timeout(180)
def test_journal_series_measures_cost_size_and_revert(servers: Servers, tmp_path: Path) -> None:
    bench = Bench(servers, product_docs(PRODUCTS), tmp_path, 2000.0, 500, read_ids=25)
    cfg = SystemConfig(processes=1, pool="prefork", concurrency=2, latency_ms=0.0)
    urls: list[str] = []

    @contextmanager
    def bench_for(tag: str) -> Iterator[Bench]:
        with fresh_bench(bench, tag) as here:
            urls.append(here.servers.mongo.url)
            yield here

    series = journal_cost.run_series(
        bench, PRODUCTS, cfg, say=lambda line: None, order=(True, False), bench_for=bench_for
    )
    # Each run, its revert included, on servers of its own, none on the shared ones.
    assert len(set(urls)) == 2 and servers.mongo.url not in urls

    on, off = series["runs"]
    assert on["journal"] and not off["journal"]
    # The journaled run: every product written and journaled, then reverted (revert_and_measure
    # raises if any catalog field is left), so its bytes and revert rate are measured.
    assert on["written"] == PRODUCTS and on["journal_bytes"] > 0
    assert on["bytes_per_doc"] == pytest.approx(on["journal_bytes"] / PRODUCTS, abs=0.1)
    assert on["revert_docs_per_s"] and on["revert_docs_per_s"] > 0
    assert "journal_bytes" not in off  # no revert after a run without the journal
    rate_on, rate_off = on["products_per_s"], off["products_per_s"]
    assert series["slowdown"] == pytest.approx(1 - rate_on / rate_off, abs=0.001)
    assert series["met"] == (series["slowdown"] <= journal_cost.TARGET_SLOWDOWN)

    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# head\n\n{JOURNAL_BEGIN}\nstale\n{JOURNAL_END}\n\ntail\n")
    write_journal(doc, series)
    text = doc.read_text()
    assert "stale" not in text and text.rstrip().endswith("tail")
    assert f"{series['bytes_per_doc']:.0f} journal bytes per changed document" in text


def test_journal_series_flag() -> None:
    assert parse([]).with_journal_cost
    assert not parse(["--no-journal-cost"]).with_journal_cost
