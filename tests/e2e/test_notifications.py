"""Job notices reach a webhook once per transition, off the batch path, with no secret in them."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from backfill_engine.notify import NOTIFICATIONS
from backfill_engine.settings import Settings, SettingsError
from orchestrator import jobs
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e


class Receiver:
    """A webhook on loopback that answers 500 to its first `fail_first` requests."""

    def __init__(self, fail_first: int = 0, answer_after: float = 0.0) -> None:
        self.fail_first, self.attempts = fail_first, 0
        self.received = threading.Event()  # a POST has arrived (its answer may be pending)
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[str] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with lock:
                    receiver.attempts += 1
                    receiver.raw.append(raw)
                    ok = receiver.attempts > receiver.fail_first
                    if ok:
                        receiver.bodies.append(json.loads(raw))
                receiver.received.set()
                time.sleep(answer_after)
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def _notices(system: System) -> list[dict[str, Any]]:
    return list(system.db[NOTIFICATIONS].find())


def test_one_notice_per_transition_with_several_workers(
    system: System, flaky_receiver: Receiver
) -> None:
    hook_secret = secrets.token_hex(12)  # a Slack webhook's path is its credential
    token = f"catalog-token-{secrets.token_hex(8)}"
    system.start_catalog(token=token)
    system.settings = replace(
        system.settings,
        notify_url=f"{flaky_receiver.url}/services/T0/B0/{hook_secret}",
    ).with_source_env(CATALOG_TOKEN=token)
    seed_products(system.db, 1200)
    # A stale token first: the catalog answers 401 and the job pauses with that reason.
    stale = system.start_workers(3, concurrency=1, extra_env={"CATALOG_TOKEN": f"stale-{token}"})
    job_id = system.launch(batch_size=100)
    assert system.wait(job_id, stop_when_paused=True).job["status"] == "paused"
    for worker in stale:
        worker.stop()
    system.workers = []
    system.start_workers(3, concurrency=1)
    jobs.resume(system.db, system.broker.sender, system.broker.queue, job_id)
    assert system.wait(job_id).job["status"] == "completed"

    system.wait_until(
        lambda: sum(n["state"] == "delivered" for n in _notices(system)) == 4,
        what="four notices delivered",
    )
    events = sorted(b["event"] for b in flaky_receiver.bodies)
    assert events == ["completed", "paused", "resumed", "started"]  # each exactly once
    assert flaky_receiver.attempts == 6  # two refused, then one delivery per notice
    # The two refusals fell on whichever notices were out first: six attempts in all.
    assert sum(n["attempts"] for n in _notices(system)) == 6
    by_event = {b["event"]: b for b in flaky_receiver.bodies}
    assert by_event["paused"]["reason"] and "HTTP 401" in by_event["paused"]["reason"]
    assert by_event["paused"]["text"].startswith(f"mongo-backfill: job {job_id} paused: ")
    assert by_event["completed"]["totals"]["written"] == 1200
    assert all(b["job_id"] == job_id and b["backfill"] == "catalog" for b in flaky_receiver.bodies)

    # Neither the catalog token (current or stale) nor the webhook's path, anywhere.
    seen = " ".join(flaky_receiver.raw) + repr(_notices(system))
    assert token not in seen and hook_secret not in seen


def test_a_dead_receiver_never_blocks_or_fails_the_job(system: System) -> None:
    # Accepts connections (the kernel's backlog) and never answers: every POST times out.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        port = silent.getsockname()[1]
        system.settings = replace(system.settings, notify_url=f"http://127.0.0.1:{port}/hook")
        seed_products(system.db, 800)
        system.start_workers(2)
        job_id = system.launch(batch_size=100)
        summary = system.wait(job_id)
        assert summary.job["status"] == "completed" and summary.items["written"] == 800
        system.wait_until(
            lambda: any(n.get("last_error") for n in _notices(system)),
            what="a failed delivery recorded",
        )
        notices = _notices(system)
        assert {n["event"] for n in notices} <= {"started", "completed"}
        assert all(n["state"] == "pending" for n in notices)  # retried later, not lost
        failed = [n for n in notices if n.get("last_error")]
        assert failed[0]["last_error"] in ("ReadTimeout", "ConnectionError", "ConnectTimeout")
        assert failed[0]["next_at"] > failed[0]["created_at"]  # backed off
    finally:
        silent.close()


def test_notify_url_is_validated_and_never_printed() -> None:
    with pytest.raises(SettingsError, match="BACKFILL_NOTIFY_URL"):
        Settings.from_env({"BACKFILL_NOTIFY_URL": "ftp://hooks.example/x"})
    s = Settings.from_env(
        {"BACKFILL_NOTIFY_URL": "https://hooks.example/services/T0/B0/s3cr3tpath"}
    )
    assert s.notify_url and "s3cr3tpath" not in repr(s)
    assert any("s3cr3tpath" in secret for secret in s.secrets)
    assert s.to_env()["BACKFILL_NOTIFY_URL"] == s.notify_url


def test_a_worker_stopped_mid_delivery_records_the_notice_it_posted(system: System) -> None:
    # The receiver answers 3 s after each POST; the worker is stopped (SIGTERM, a warm
    # shutdown) while its sweeper waits for that answer. Its sweeper thread was a daemon
    # cut off at exit: the notice stayed leased and unrecorded, and once the lease ran out
    # another worker posted it again (test_one_notice_per_transition_..., a clean clone).
    receiver = Receiver(answer_after=3.0)
    try:
        system.settings = replace(system.settings, notify_url=f"{receiver.url}/hook")
        seed_products(system.db, 20)
        [worker] = system.start_workers(1, concurrency=1)
        system.launch(batch_size=100)  # its `started` notice: only the worker's sweeper posts
        assert receiver.received.wait(60), "the worker's sweeper never posted the notice"
        worker.stop()
        system.workers = []
        [notice] = [n for n in _notices(system) if n["event"] == "started"]
        assert notice["state"] == "delivered", notice
        assert notice["lease_owner"] is None
        assert [b["event"] for b in receiver.bodies].count("started") == 1
    finally:
        receiver.close()
