"""`backfill metrics` serves what the job documents say, over real HTTP, after a real run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from backfill_engine.revert_plan import revert_totals
from migrations.versions._catalog import PRODUCTS
from orchestrator.metrics import METRIC_NAMES
from orchestrator.revert import revert
from orchestrator.stack import free_port
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e


@pytest.fixture
def metrics_url(system: System, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **system.settings.to_env(), "BACKFILL_DATA_DIR": str(tmp_path / "d")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "metrics", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the endpoint listens
    try:
        assert line.startswith("serving "), line + proc.stdout.read()
        yield line.split()[1].rstrip(";")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = requests.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_match_the_job_documents(system: System, metrics_url: str) -> None:
    system.start_catalog("--missing-rate", "0.1", "--seed", "7")
    seed_products(system.db, 500)
    system.start_workers(1)
    job_id = system.launch(batch_size=100)
    summary = system.wait(job_id)
    job, items = summary.job, summary.items
    assert summary.quarantined > 0 and items["missing"] > 0  # so the zeros prove nothing wrong

    samples = _samples(metrics_url)
    labels = frozenset(
        {"job": job_id, "backfill": "catalog", "status": job["status"], "kind": "backfill"}.items()
    )

    def value(name: str, **extra: str) -> float:
        return samples[(name, labels | frozenset(extra.items()))]

    assert samples[("backfill_mongo_up", frozenset())] == 1
    assert value("backfill_documents_planned") == job["planning"]["items"] == 500
    assert value("backfill_documents_processed") == items["processed"] == 500
    for name in ("written", "unchanged", "missing", "invalid", "deleted"):
        assert value(f"backfill_documents_{name}") == items[name], name
    assert value("backfill_documents_quarantined") == summary.quarantined
    for state, n in summary.batches.items():
        assert value("backfill_batches", state=state) == n, state
    assert value("backfill_batches_planned") == job["planning"]["batches"] == 5
    seconds = (job["finished_at"] - job["created_at"]).total_seconds()
    assert value("backfill_documents_per_second") == pytest.approx(500 / seconds)
    assert value("backfill_rate_limit_per_second") == job["rate_per_second"]
    catalog_seconds = sum(
        b["timings"]["source_s"] for b in system.db.backfill_metadata.find({"job_id": job_id})
    )
    phase = value("backfill_batch_phase_seconds_total", phase="source")
    assert phase == pytest.approx(catalog_seconds)
    # The engine records what its HTTP calls cost: every request the stand-in saw.
    assert value("backfill_source_requests_total") == system.stats()["requests"] == 5
    assert value("backfill_source_http_5xx_total") == 0
    # A finished job has no ETA; every exported name is one the dashboard may use.
    assert not any(name == "backfill_eta_seconds" for name, _ in samples)
    assert {name.removesuffix("_total") for name, _ in samples} <= {
        n.removesuffix("_total") for n in METRIC_NAMES
    }


def test_a_taken_port_is_one_error_line(system: System, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **system.settings.to_env(), "BACKFILL_DATA_DIR": str(tmp_path / "d")}
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "metrics", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: metrics cannot listen on 127.0.0.1:{port}")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_revert_job_has_its_kind_and_its_field_value_counts(
    system: System, metrics_url: str
) -> None:
    ids = seed_products(system.db, 200)
    system.start_workers(1)
    job_id = system.wait(system.launch(batch_size=100)).job["_id"]
    # The application changes 30 brands and already puts back 10 categories: conflicts
    # and "already as before" are then both non-zero.
    products = system.db[PRODUCTS]
    products.update_many({"_id": {"$in": ids[:30]}}, {"$set": {"brand": "app"}})
    products.update_many({"_id": {"$in": ids[30:40]}}, {"$unset": {"category": ""}})
    started, _ = revert(system.db, system.broker, system.settings, job_id)
    revert_id = str(started["_id"])
    summary = system.wait(revert_id)
    assert summary.job["status"] == "completed"
    totals = revert_totals(system.db, revert_id)
    assert totals == {"restored": 200 * 5 - 40, "already": 10, "conflicts": 30, "unrestorable": 0}

    samples = _samples(metrics_url)
    labels = {"job": revert_id, "backfill": "catalog", "status": "completed", "kind": "revert"}
    for outcome, n in totals.items():
        key = (
            "backfill_revert_field_values_total",
            frozenset({**labels, "outcome": outcome}.items()),
        )
        assert samples[key] == n, outcome
    batches = frozenset(labels.items())
    assert samples[("backfill_documents_processed", batches)] == 200
    # The backfill it reverted stays a backfill, with no revert counts of its own.
    assert any(
        name == "backfill_documents_processed"
        and ("job", job_id) in lab
        and ("kind", "backfill") in lab
        for name, lab in samples
    )
    assert not any(
        name == "backfill_revert_field_values_total" and ("job", job_id) in lab
        for name, lab in samples
    )
