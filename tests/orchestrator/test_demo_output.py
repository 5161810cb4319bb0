"""`backfill demo` ends by saying how to watch a run live, and names no URL it stopped serving."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e


def _demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "orchestrator.cli", "demo", "--workers", "1", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)


def _job_row(summary: str, name: str, documents: int, written: int) -> re.Match[str] | None:
    cells = rf"{name}\s*│\s*{documents:,}\s*│\s*{written:,}\s*│\s*0\s*│\s*[\d.]+\s*│\s*[\d,]+"
    return re.search(cells, summary)


def test_demo_summary_names_no_dead_url_and_ends_with_how_to_watch(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MONGO_", "CATALOG_", "BACKFILL_", "FLOWER_"))
    }
    env.update(BACKFILL_DATA_DIR=str(tmp_path / "data"), COLUMNS="120")
    done = _demo(env, "--seed", "300")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    summary = out[out.index("mongo-backfill demo") :]
    # Flower was served while the demo ran, and said so then, not in the summary.
    flower_urls = re.findall(r"Flower (http://\S+) while the demo runs", out)
    assert flower_urls, out
    with pytest.raises(requests.ConnectionError):
        requests.get(flower_urls[0], timeout=5)
    assert "http://" not in summary and "mongodb://" not in summary
    tail = " ".join(out.strip().splitlines()[-3:])
    assert "`backfill up`" in tail and "`backfill run catalog`" in tail
    # Every backfill job of the run has its row (documents, written, quarantined, seconds,
    # documents/s), not only the last one: here the catalog's and gtin14's.
    for name in ("catalog", "gtin14"):
        assert _job_row(summary, name, 300, 300), summary

    # The scale run after a first demo, in the same data directory: the products seeded now
    # go in past 20240407's validator (they predate the catalog), and with every migration
    # applied the demo re-runs each backfill they ran, which fills in only the new ones.
    again = _demo(env, "--seed", "450", "--no-flower")
    assert again.returncode == 0, again.stderr
    summary = again.stdout[again.stdout.index("mongo-backfill demo") :]
    assert "re-running catalog, gtin14 to bring the 150 new documents up to date" in again.stdout
    for name in ("catalog", "gtin14"):
        assert _job_row(summary, name, 450, 150), summary
    assert re.search(r"products backfilled\s*│\s*450 of 450", summary), summary
