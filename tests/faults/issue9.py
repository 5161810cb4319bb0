"""Helpers shared by the issue 9 scenarios: reading state without sweeping, catalog knobs."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import requests

from backfill_engine.states import METADATA
from tests.faults.proxy import TcpProxy
from tests.harness import System

TERMINAL = ("completed", "completed_with_errors", "failed", "cancelled")


def set_faults(system: System, **knobs: Any) -> dict[str, Any]:
    """Change the stand-in's knobs at run time (POST /_faults)."""
    assert system.catalog
    resp = requests.post(f"{system.catalog.url}/_faults", json=knobs, timeout=5)
    resp.raise_for_status()
    return dict(resp.json())


def job_doc(system: System, job_id: str) -> dict[str, Any]:
    job = system.db[METADATA].find_one({"_id": job_id, "kind": "job"})
    assert job is not None, f"no job {job_id}"
    return job


def batches(system: System, job_id: str, **match: Any) -> list[dict[str, Any]]:
    query = {"job_id": job_id, "kind": "batch", **match}
    return list(system.db[METADATA].find(query).sort("batch_no", 1))


def wait_unswept(system: System, job_id: str, timeout: float, why: str) -> dict[str, Any]:
    """Poll (never sweep: no orchestrator is watching) until the job ends; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_doc(system, job_id)
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.2)
    job = job_doc(system, job_id)
    counts: dict[str, int] = {}
    for b in batches(system, job_id):
        counts[b["status"]] = counts.get(b["status"], 0) + 1
    raise AssertionError(
        f"job {job_id} still {job['status']} after {timeout:g} s ({why}); batches {counts}; "
        f"planning {job.get('planning')}; logs in {system.log_dir}"
    )


def mongo_proxy(system: System) -> TcpProxy:
    """A freezable proxy in front of this test's MongoDB (started; close it when done)."""
    assert system.settings.mongo_url
    where = urlsplit(system.settings.mongo_url)
    proxy = TcpProxy(where.hostname or "127.0.0.1", where.port or 27017)
    return proxy.__enter__()


def proxied_mongo_url(proxy: TcpProxy) -> str:
    # A direct connection (the proxy is not the server's advertised address) and timeouts
    # longer than any stall a scenario makes, so the client waits instead of giving up.
    return (
        f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
        "&connectTimeoutMS=60000&socketTimeoutMS=0"
    )
