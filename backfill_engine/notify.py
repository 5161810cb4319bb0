"""Job notifications: an outbox in MongoDB, delivered to BACKFILL_NOTIFY_URL off the batch path.

Whoever wins a job transition (its guarded update matched) calls `job_event`, which only
inserts a notice whose `_id` is `<job>:<event>:<n>`: the unique `_id` makes it one notice
per transition however many workers race. The sweepers (the worker autosweep thread, a
waiting orchestrator command) call `deliver_due`, which leases due notices, POSTs a
Slack-compatible body under one deadline (connect to the last byte of the answer, of
which at most MAX_ANSWER_BYTES are read), and marks them delivered or retries later
with backoff, giving up after MAX_ATTEMPTS with the error recorded. Nothing here raises
into the caller: a notice that cannot be written or sent never blocks or fails a job.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import uuid
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import pymongo.errors
import requests
from pymongo.database import Database

from backfill_engine import clock
from backfill_engine.http_deadline import deadline_session, within
from backfill_engine.redact import REDACTED, redact_text
from backfill_engine.states import COUNTER_NAMES, METADATA, QUARANTINE, BatchStatus

log = logging.getLogger(__name__)

NOTIFICATIONS = "backfill_notifications"
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 1.0  # 1, 2, 4, ... seconds between attempts
BACKOFF_CAP_SECONDS = 300.0
LEASE_SECONDS = 30.0  # longer than one POST may take (DELIVERY_DEADLINE_SECONDS)
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0
DELIVERY_DEADLINE_SECONDS = 10.0  # one POST, connect to the last byte of its answer
# A receiver answers a few bytes ("ok" from Slack); an answer past this is not read on,
# and a 2xx that does not end within it is not taken as delivered.
MAX_ANSWER_BYTES = 64 * 1024
MAX_PER_CALL = 20  # notices one sweep delivers at most; the next sweep takes the rest
ERROR_MAX_CHARS = 200


class Event(StrEnum):
    STARTED = "started"
    PAUSED = "paused"
    RESUMED = "resumed"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"


class NoticeState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    ABANDONED = "abandoned"  # MAX_ATTEMPTS failed; `last_error` says why


# How each event reads in a chat channel.
HEADLINES = {
    Event.STARTED: "started",
    Event.PAUSED: "paused",
    Event.RESUMED: "resumed",
    Event.CANCELLED: "cancelled",
    Event.COMPLETED: "completed",
    Event.COMPLETED_WITH_ERRORS: "completed with errors",
    Event.FAILED: "failed",
}


def job_event(db: Database, job_id: str, event: Event, *, reason: str | None = None) -> str | None:
    """Record that `job_id` went through `event` (call only after winning the transition).

    Returns the notice id, or None when it could not be written (logged, never raised).
    """
    coll = db[NOTIFICATIONS]
    try:
        # The n-th time this job had this event: pause/resume may repeat, each is its own notice.
        n = coll.count_documents({"job_id": job_id, "event": event.value})
        notice_id = f"{job_id}:{event.value}:{n}"
        now = clock.now()
        coll.insert_one(
            {
                "_id": notice_id,
                "job_id": job_id,
                "event": event.value,
                "reason": redact_text(reason) if reason else None,
                "at": now,
                "state": NoticeState.PENDING.value,
                "attempts": 0,
                "next_at": now,
                "lease_owner": None,
                "lease_until": None,
                "created_at": now,
            }
        )
        return notice_id
    except pymongo.errors.DuplicateKeyError:
        return None  # this transition's notice already exists
    except pymongo.errors.PyMongoError as exc:
        log.warning("job %s %s: notice not recorded (%s)", job_id, event.value, type(exc).__name__)
        return None


def safe_webhook(url: str | None) -> str:
    """The webhook URL as printable: scheme and host only (a Slack webhook's path is its secret)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/{REDACTED}"


def webhook_secrets(url: str | None) -> list[str]:
    """Parts of the webhook URL that must never be printed: the whole URL and its path."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [url]
    if len(parts.path) > 1:
        found.append(parts.path)
    if parts.query:
        found.append(parts.query)
    return found


def message(
    notice: dict[str, Any], job: dict[str, Any] | None, totals: dict[str, int]
) -> dict[str, Any]:
    """The JSON body: Slack's `text` plus structured fields for other receivers."""
    event = Event(notice["event"])
    job_id = notice["job_id"]
    text = f"mongo-backfill: job {job_id} {HEADLINES[event]}"
    if notice.get("reason"):
        text += f": {notice['reason']}"
    if event in (Event.COMPLETED, Event.COMPLETED_WITH_ERRORS) and totals:
        text += (
            f" (written {totals.get('written', 0):,}, quarantined {totals.get('quarantined', 0):,},"
            f" failed batches {totals.get('failed_batches', 0):,})"
        )
    return {
        "text": text,
        "id": notice["_id"],  # the same on a redelivery: receivers may de-duplicate on it
        "event": event.value,
        "job_id": job_id,
        "backfill": (job or {}).get("backfill"),
        "status": (job or {}).get("status"),
        "reason": notice.get("reason"),
        "at": notice["at"].replace(tzinfo=dt.UTC).isoformat(),
        "totals": totals,
    }


def _totals(db: Database, job_id: str) -> dict[str, int]:
    group: dict[str, Any] = {"_id": None, "processed": {"$sum": "$processed"}}
    for name in COUNTER_NAMES:
        group[name] = {"$sum": f"$counters.{name}"}
    rows = list(db[METADATA].aggregate([{"$match": {"job_id": job_id}}, {"$group": group}]))
    totals = {k: int(v or 0) for k, v in (rows[0] if rows else {}).items() if k != "_id"}
    totals["quarantined"] = db[QUARANTINE].count_documents({"job_id": job_id})
    totals["failed_batches"] = db[METADATA].count_documents(
        {"job_id": job_id, "status": BatchStatus.FAILED.value}
    )
    return totals


def _claim(db: Database, owner: str) -> dict[str, Any] | None:
    """Lease one due notice: find, then a guarded update_one (see store.lease_batch)."""
    coll = db[NOTIFICATIONS]
    now = clock.now()
    due = {
        "state": NoticeState.PENDING.value,
        "next_at": {"$lte": now},
        "lease_until": {"$not": {"$gte": now}},
    }
    for _ in range(3):
        cand = coll.find_one(due, sort=[("next_at", 1)])
        if cand is None:
            return None
        until = now + dt.timedelta(seconds=LEASE_SECONDS)
        res = coll.update_one(
            {"_id": cand["_id"], **due}, {"$set": {"lease_owner": owner, "lease_until": until}}
        )
        if res.modified_count == 1:
            return cand
    return None


def _post(
    url: str, body: dict[str, Any], deadline: float = DELIVERY_DEADLINE_SECONDS
) -> str | None:
    """POST `body`; None when the receiver accepted it (2xx, answered whole), else why not."""
    timeout = (min(CONNECT_TIMEOUT_SECONDS, deadline), min(READ_TIMEOUT_SECONDS, deadline))
    with deadline_session() as session, within(deadline) as limit:
        try:
            with session.post(
                url,
                json=body,
                timeout=timeout,
                stream=True,  # the answer is read here, bounded, never whole
                allow_redirects=False,  # a redirect could carry the notice to another host
            ) as answer:
                if not 200 <= answer.status_code < 300:
                    return f"HTTP {answer.status_code}"
                size = 0
                for chunk in answer.iter_content(chunk_size=8192):
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        return f"answer over {MAX_ANSWER_BYTES} bytes"
        except requests.RequestException as exc:
            return "RequestDeadlineExceeded" if limit.expired else type(exc).__name__
    return None


def backoff_seconds(attempts: int) -> float:
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))


def deliver_due(
    db: Database,
    url: str | None,
    secrets: tuple[str, ...] = (),
    *,
    limit: int = MAX_PER_CALL,
    deadline: float = DELIVERY_DEADLINE_SECONDS,
) -> int:
    """Send up to `limit` due notices to `url`; return how many were delivered. Never raises.

    Each POST ends within `deadline` seconds, so a receiver that trickles its answer
    cannot hold the calling sweeper, nor (past the lease) the next one.
    """
    if not url:
        return 0
    hidden = (*secrets, *webhook_secrets(url))
    owner = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
    delivered = 0
    try:
        for _ in range(limit):
            notice = _claim(db, owner)
            if notice is None:
                break
            delivered += _deliver_one(db, url, hidden, owner, notice, deadline)
    except pymongo.errors.PyMongoError as exc:
        log.warning("notices not delivered this round (%s)", type(exc).__name__)
    except Exception:
        log.exception("notices not delivered this round")
    return delivered


def _deliver_one(
    db: Database,
    url: str,
    hidden: tuple[str, ...],
    owner: str,
    notice: dict[str, Any],
    deadline: float,
) -> int:
    job = db[METADATA].find_one({"_id": notice["job_id"]}, {"backfill": 1, "status": 1})
    body = message(notice, job, _totals(db, notice["job_id"]))
    # Scrub every text field of the body with what this process knows to be secret.
    for key in ("text", "reason"):
        if body.get(key):
            body[key] = redact_text(str(body[key]), hidden)
    error = _post(url, body, deadline)
    attempts = int(notice.get("attempts") or 0) + 1
    guard = {"_id": notice["_id"], "lease_owner": owner}
    now = clock.now()
    if error is None:
        db[NOTIFICATIONS].update_one(
            guard,
            {
                "$set": {
                    "state": NoticeState.DELIVERED.value,
                    "delivered_at": now,
                    "attempts": attempts,
                    "lease_owner": None,
                    "lease_until": None,
                }
            },
        )
        return 1
    error = redact_text(error, hidden)[:ERROR_MAX_CHARS]
    update: dict[str, Any] = {
        "attempts": attempts,
        "last_error": error,
        "lease_owner": None,
        "lease_until": None,
    }
    if attempts >= MAX_ATTEMPTS:
        update["state"] = NoticeState.ABANDONED.value
        log.warning("notice %s abandoned after %d attempts: %s", notice["_id"], attempts, error)
    else:
        update["next_at"] = now + dt.timedelta(seconds=backoff_seconds(attempts))
    db[NOTIFICATIONS].update_one(guard, {"$set": update})
    return 0
