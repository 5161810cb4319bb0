"""The request deadline covers connect to last byte: status line, headers, body, webhooks.

Servers here send each byte well within the read timeout, so only a deadline over the
whole exchange ends the request. The outcome is asserted (error, attempts, requests
made); pytest's timeout is only the guard against a hang.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from backfill_engine import notify
from backfill_engine.http_client import (
    FetchInterrupted,
    HttpSourceClient,
    SourceUnavailableError,
)
from backfill_engine.http_deadline import deadline_session, within
from backfill_engine.runtime import http_client_for
from backfill_engine.settings import Settings
from catalog_service.data import expected_item
from tests.catalog.standin import StandIn
from tests.catalog_definition import CATALOG_PATH, CATALOG_SOURCE

HANG_GUARD_SECONDS = 30  # far above every deadline here; only a hang reaches it
# A trickled head (about 150 bytes, one at a time) takes longer than the hang guard, each
# byte coming sooner than any deadline or read timeout here.
TRICKLE_FOR_SECONDS = 40.0
DEADLINE = 0.5


def client(standin: StandIn, **kwargs: Any) -> HttpSourceClient:
    options: dict[str, Any] = {
        "max_retries": 1,
        "backoff_seconds": 0.0,
        "read_timeout": 5.0,
        "request_deadline": DEADLINE,
        "sleep": lambda s: None,
        **kwargs,
    }
    return HttpSourceClient(standin.url, path=CATALOG_PATH, **options)


@pytest.mark.timeout(HANG_GUARD_SECONDS)
def test_a_trickled_status_line_and_headers_hit_the_deadline(catalog: StandIn) -> None:
    catalog.faults(trickle_head_rate=1.0, trickle_seconds=TRICKLE_FOR_SECONDS)
    with pytest.raises(SourceUnavailableError, match="RequestDeadlineExceeded") as exc:
        client(catalog).fetch(["a"])
    assert (exc.value.attempts, exc.value.status) == (2, None)
    assert catalog.stats()["requests"] == 2, "retried like a read timeout, then given up"


@pytest.mark.timeout(HANG_GUARD_SECONDS)
def test_a_head_trickled_within_the_deadline_arrives(catalog: StandIn) -> None:
    catalog.faults(trickle_head_rate=1.0, trickle_seconds=0.3)
    result = client(catalog, request_deadline=30).fetch(["a", "b"])
    assert result.items == {"a": expected_item("a"), "b": expected_item("b")}


@pytest.mark.timeout(HANG_GUARD_SECONDS)
def test_a_slot_held_by_a_trickling_head_is_released_to_a_pause(catalog: StandIn) -> None:
    catalog.faults(trickle_head_rate=1.0, trickle_seconds=TRICKLE_FOR_SECONDS)
    paused = threading.Event()
    # The job is paused while the first request hangs on the head: the deadline ends that
    # request, and the pause stops the retries.
    timer = threading.Timer(0.1, paused.set)
    timer.start()
    try:
        with pytest.raises(FetchInterrupted):
            client(catalog, max_retries=5).fetch(["a"], should_stop=paused.is_set)
    finally:
        timer.cancel()
    assert catalog.stats()["requests"] == 1


@pytest.mark.timeout(HANG_GUARD_SECONDS)
def test_the_head_deadline_comes_from_settings(catalog: StandIn) -> None:
    settings = Settings.from_env(
        {
            "CATALOG_URL": catalog.url,
            "BACKFILL_HTTP_REQUEST_DEADLINE": "0.25",
            "BACKFILL_HTTP_MAX_RETRIES": "0",
        }
    )
    catalog.faults(trickle_head_rate=1.0, trickle_seconds=TRICKLE_FOR_SECONDS)
    with pytest.raises(SourceUnavailableError, match="RequestDeadlineExceeded"):
        http_client_for(CATALOG_SOURCE.http, settings, shape=CATALOG_SOURCE.shape).fetch(["a"])
    assert catalog.stats()["requests"] == 1


# --- webhooks ------------------------------------------------------------------------


def _trickle_status(conn: socket.socket) -> None:
    """A status line one byte at a time, each well within the read timeout."""
    for byte in b"HTTP/1.1 200 OK\r\n" * 100:
        conn.sendall(bytes([byte]))
        time.sleep(0.2)


def _endless_body(conn: socket.socket) -> None:
    """A 200 whose chunked body never ends, sent as fast as the client reads."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%b\r\n" % (8192, b"x" * 8192)
    for _ in range(100_000):
        conn.sendall(chunk)


def _big_body(conn: socket.socket) -> None:
    """A 200 announcing and sending 8 MiB: more than any receiver's answer needs."""
    size = 8 * 1024 * 1024
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    conn.sendall(b"x" * size)


@contextlib.contextmanager
def receiver(
    answer: Callable[[socket.socket], None], tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """A loopback server that reads each request's head and then answers with `answer`."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                received = b""
                while b"\r\n\r\n" not in received:
                    received += conn.recv(65536)
                answer(conn)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        scheme = "https" if tls is not None else "http"
        yield f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/hook/secret"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _due_notice(db: Database) -> str:
    now = notify.clock.now()
    notice_id = f"job-{id(db)}-{time.monotonic_ns()}:completed:0"
    db[notify.NOTIFICATIONS].insert_one(
        {
            "_id": notice_id,
            "job_id": notice_id.split(":")[0],
            "event": "completed",
            "reason": None,
            "at": now,
            "state": notify.NoticeState.PENDING.value,
            "attempts": 0,
            "next_at": now - dt.timedelta(seconds=1),
            "lease_owner": None,
            "lease_until": None,
            "created_at": now,
        }
    )
    return notice_id


@pytest.mark.timeout(HANG_GUARD_SECONDS)
@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (_trickle_status, "RequestDeadlineExceeded"),
        (_endless_body, "answer over the cap"),
        (_big_body, "answer over the cap"),
    ],
)
def test_a_receiver_that_never_finishes_its_answer_fails_the_delivery_cleanly(
    db: Database, answer: Callable[[socket.socket], None], error: str
) -> None:
    if error == "answer over the cap":
        error = f"answer over {notify.MAX_ANSWER_BYTES} bytes"
    notice_id = _due_notice(db)
    with receiver(answer) as url:
        delivered = notify.deliver_due(db, url, deadline=DEADLINE, limit=1)
    assert delivered == 0
    notice = db[notify.NOTIFICATIONS].find_one({"_id": notice_id})
    assert notice is not None
    assert notice["state"] == notify.NoticeState.PENDING.value, "retried later, not lost"
    assert (notice["attempts"], notice["last_error"]) == (1, error)
    assert notice["lease_owner"] is None, "the attempt ended and let the notice go"


@pytest.mark.timeout(HANG_GUARD_SECONDS)
def test_a_receiver_answering_at_once_still_gets_its_notice(db: Database) -> None:
    def ok(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    notice_id = _due_notice(db)
    with receiver(ok) as url:
        assert notify.deliver_due(db, url, deadline=DEADLINE, limit=1) == 1
    notice = db[notify.NOTIFICATIONS].find_one({"_id": notice_id})
    assert notice is not None and notice["state"] == notify.NoticeState.DELIVERED.value


# --- TLS: the deadline holds on an SSL socket too -------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made with the openssl CLI)."""
    # openssl ships with the base system here and in CI: its absence is a failure, not a skip.
    assert shutil.which("openssl"), "the openssl command is needed to make a test certificate"
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    argv = [
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
        *("-addext", "subjectAltName=IP:127.0.0.1"),
    ]
    subprocess.run(
        argv,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    return context


@pytest.mark.timeout(HANG_GUARD_SECONDS)
def test_a_status_line_trickled_over_tls_hits_the_deadline(
    tls_files: tuple[Path, Path],
) -> None:
    with receiver(_trickle_status, _tls(tls_files)) as url:
        base = url.rsplit("/hook", 1)[0]
        source = HttpSourceClient(
            base, max_retries=1, read_timeout=5.0, request_deadline=DEADLINE, sleep=lambda s: None
        )
        source.session.verify = str(tls_files[0])
        with pytest.raises(SourceUnavailableError, match="RequestDeadlineExceeded") as exc:
            source.fetch(["a"])
    assert exc.value.attempts == 2


@pytest.mark.timeout(HANG_GUARD_SECONDS)
def test_a_tls_answer_within_the_deadline_arrives(tls_files: tuple[Path, Path]) -> None:
    def ok(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with receiver(ok, _tls(tls_files)) as url, deadline_session() as session, within(30):
        answer = session.get(url, verify=str(tls_files[0]), timeout=5)
    assert (answer.status_code, answer.content) == (200, b"ok")
