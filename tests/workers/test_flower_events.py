"""What our processes publish for Flower keeps each batch's title.

Flower builds its task list from Celery events. A `task-sent` event carries the task's
real name (`backfill.batch`), not the title, and Celery's event state merges it over
everything a late arrival finds: published by the dispatching process while a worker
has already received, run and finished the batch (a busy host is enough), it renames
the batch in Flower and it drops out of its job's rows. So the publisher sends none.
"""

from __future__ import annotations

import base64
import json
import secrets

import redis

from backfill_engine.dispatch import send_batch, task_title
from backfill_engine.settings import Settings
from backfill_workers.app import create_app


def _events_until(sub: redis.client.PubSub, sentinel: str) -> list[dict]:
    """Every event delivered to `sub` before `sentinel` (published after the send)."""
    events: list[dict] = []
    for _ in range(1000):
        message = sub.get_message(timeout=5.0)
        if message is None:
            raise AssertionError("the sentinel never arrived")
        if message["type"] != "pmessage":
            continue
        if message["data"] == sentinel.encode():
            return events
        envelope = json.loads(message["data"])
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        body = json.loads(body)
        events.extend(body if isinstance(body, list) else [body])
    raise AssertionError("more than 1000 events before the sentinel")


def test_sending_a_batch_publishes_no_event_that_renames_it(
    settings: Settings, redis_client: redis.Redis
) -> None:
    app = create_app(settings)
    db = redis_client.connection_pool.connection_kwargs.get("db", 0)
    pattern = f"/{db}.celeryev/*"
    sub = redis_client.pubsub()
    sub.psubscribe(pattern)
    assert sub.get_message(timeout=5.0)["type"] == "psubscribe"
    job_id = f"events-{secrets.token_hex(4)}"
    try:
        send_batch(app, settings.queue, job_id, 0, total=1)
        # Redis runs commands one at a time: an event published by send_batch reaches
        # the subscriber before this sentinel does.
        sentinel = secrets.token_hex(8)
        redis_client.publish(f"/{db}.celeryev/test.sentinel", sentinel)
        events = _events_until(sub, sentinel)
        queued = [json.loads(m) for m in redis_client.lrange(settings.queue, 0, -1)]
    finally:
        sub.close()
        redis_client.delete(settings.queue)
        app.close()
    # The send happened: one message, titled, waits in the queue.
    assert [m["headers"]["shadow"] for m in queued] == [task_title(job_id, 0, 1)]
    renaming = [e for e in events if e.get("name") and e["name"] != task_title(job_id, 0, 1)]
    assert renaming == [], "an event names the batch otherwise than by its title"
    assert [e for e in events if e.get("type") == "task-sent"] == []
