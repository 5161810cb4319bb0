"""A pickle-serialized task pushed onto the queue by hand is refused; nothing in it runs."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path
from typing import Any

from kombu import Connection

from tests.harness import System, seed_products


class OpenOnUnpickle:
    """Unpickling this calls open(path, "w"): the file's existence proves code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def push_pickled_task(broker_url: str, queue: str, marker: Path) -> None:
    """Publish a Celery-protocol-2 message for backfill.batch whose body is a pickle."""
    body = pickle.dumps(
        ((OpenOnUnpickle(marker), 0), {}, {"callbacks": None, "errbacks": None, "chain": None}),
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    # The payload really is hostile: unpickling it here would create the file.
    assert b"open" in body and str(marker).encode() in body
    task_id = str(uuid.uuid4())
    with Connection(broker_url) as conn:
        conn.Producer().publish(
            body,
            exchange="",
            routing_key=queue,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={
                "lang": "py",
                "task": "backfill.batch",
                "id": task_id,
                "root_id": task_id,
                "retries": 0,
                "argsrepr": "()",
                "kwargsrepr": "{}",
                "origin": "attacker@nowhere",
            },
            declare=[],
        )


def _log(system: System) -> str:
    return "".join(w.log_path.read_text(errors="replace") for w in system.workers if w.log_path)


def test_pickled_message_is_refused_and_nothing_in_it_runs(system: System, tmp_path: Path) -> None:
    marker = tmp_path / "created-by-unpickling"
    ids = seed_products(system.db, 200)
    (worker,) = system.start_workers(1, concurrency=1)
    system.wait_until(lambda: "ready." in _log(system), timeout=90, what="worker ready")
    assert system.settings.redis_url

    push_pickled_task(system.settings.redis_url, system.settings.queue, marker)
    system.wait_until(
        lambda: "untrusted content" in _log(system) or "ContentDisallowed" in _log(system),
        timeout=60,
        what="the worker refusing the pickle",
    )
    assert not marker.exists(), "the pickle was unpickled: code from the queue ran"
    assert worker.alive()

    # The same worker still does its job afterwards.
    summary = system.wait(system.launch())
    assert summary.job["status"] == "completed"
    assert summary.items["written"] == len(ids)
    assert not marker.exists()
    assert worker.alive()
