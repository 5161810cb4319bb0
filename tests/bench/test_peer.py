"""The peer series on a tiny size: real peer and engine workers, the comparison and its doc.

Numbers are never asserted here: what is checked is that both sides did the whole job on
the same slots and that the comparison says where their time went.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import peer
from bench.cli import parse
from bench.data import product_docs
from bench.report import PEER_BEGIN, PEER_END, write_peer
from bench.scenarios import Bench
from bench.servers import Servers, start_servers
from catalog_service.limiters import FIXED_WINDOW, SCHEMES

PRODUCTS = 1000  # two tasks of 500 for the peer, two batches for the engine


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = start_servers(tmp_path_factory.mktemp("peer-bench"))
    yield s
    s.close()


@pytest.mark.timeout(120)
def test_engine_and_peer_enrich_the_same_products_on_the_same_slots(
    servers: Servers, tmp_path: Path
) -> None:
    bench = Bench(servers, product_docs(PRODUCTS), tmp_path, 2000.0, 500, read_ids=25)
    [pair] = peer.run_series(
        bench, PRODUCTS, (0.0,), 1, 2, say=lambda line: None, runs_each=1, separate_writes=(0.0,)
    )

    engine, hand = pair["engine"], pair["peer"]
    assert engine["scenario"] == "system" and hand["scenario"] == "peer"
    for row in (engine, hand):
        assert (row["processes"], row["concurrency"], row["pool"]) == (1, 2, "prefork")
        assert row["products"] == PRODUCTS and row["writes"] == PRODUCTS
        assert row["catalog_requests"] == PRODUCTS // 100  # 100 ids per request, both
        assert row["ceiling_ps"] and row["mongo_top"].get("update")
    assert hand["batches"] == PRODUCTS // peer.IDS_PER_TASK
    assert pair["ratio"] == pytest.approx(pair["engine_ps"] / pair["peer_ps"], rel=0.01)
    assert pair["met"] == (pair["ratio"] >= peer.TARGET_RATIO)
    # Where the time goes: the engine's lease and checkpoint, both sides' read/source/write.
    phases = pair["phases"]
    assert phases["lease_s"]["engine_ms"] is not None and phases["lease_s"]["peer_ms"] is None
    for key in ("read_s", "source_s", "write_s", "total_s"):
        assert phases[key]["engine_ms"] and phases[key]["peer_ms"], key
    assert all(0 < v <= 1.5 for v in pair["slot_busy"].values()), pair["slot_busy"]
    # The engine once more with its writes apart: the same job, no client bulkWrite sent.
    [apart] = pair["separate"]["runs"]
    assert apart["writes"] == PRODUCTS and apart["catalog_requests"] == PRODUCTS // 100
    together = engine["mongo_traffic"]["by_name"]
    separate = apart["mongo_traffic"]["by_name"]
    assert any(k.startswith("bulkWrite ") for k in together), together
    assert not any(k.startswith("bulkWrite ") for k in separate), separate
    assert separate.get("update products") and separate.get("insert backfill_journal")

    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# head\n\n{PEER_BEGIN}\nstale\n{PEER_END}\n\ntail\n")
    write_peer(doc, [pair])
    text = doc.read_text()
    assert "stale" not in text and text.rstrip().endswith("tail")
    assert "## Peer: the engine next to a hand-written Celery group" in text
    assert "| 0 ms |" in text and "Per-batch phases" in text
    assert "| 0 ms | engine, `BACKFILL_CLIENT_BULK_WRITE=0` |" in text


def test_the_series_flags_parse() -> None:
    opts = parse(["--no-peer", "--peer-latencies", "0,300", "--auto-rate-schemes", FIXED_WINDOW])
    assert not opts.with_peer and opts.peer_latencies == (0.0, 300.0)
    assert opts.auto_rate_schemes == (FIXED_WINDOW,)
    default = parse([])
    assert default.with_peer and default.peer_latencies == peer.DEFAULT_PEER_LATENCIES_MS
    assert default.peer_separate_writes == (0.0,)
    assert parse(["--peer-separate-writes", ""]).peer_separate_writes == ()
    assert default.auto_rate_schemes == SCHEMES
    assert default.as_dict()["auto_rate_schemes"] == list(SCHEMES)


def test_an_unknown_scheme_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(["--auto-rate-schemes", "leaky-bucket"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--auto-rate-schemes takes some of" in err and "Traceback" not in err
