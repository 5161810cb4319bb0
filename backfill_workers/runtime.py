"""This worker process's runtime, created lazily after fork."""

from __future__ import annotations

import logging
import os

import pymongo
import pymongo.errors

from backfill_engine.runtime import Runtime, build_runtime
from backfill_engine.schema import SchemaMismatchError, ensure_schema
from backfill_engine.settings import Settings

log = logging.getLogger(__name__)

START_CHECK_TIMEOUT_MS = 5000  # MongoDB may come up later: then the first batch checks

_runtime: Runtime | None = None
_runtime_pid: int | None = None


def get_runtime(worker_name: str | None = None) -> Runtime:
    """This process's runtime; rebuilt in a forked child, where sockets cannot be shared.

    `worker_name` is the Celery node name the process runs under (the task's hostname).
    """
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = build_runtime(Settings.from_env())
        _runtime_pid = os.getpid()
    if worker_name:
        _runtime.worker_name = worker_name
    return _runtime


def check_schema_at_start(settings: Settings) -> str | None:
    """Set up the engine's collections as the worker starts; the reason it must not run.

    Only a mismatch stops the worker: a server that does not answer yet is checked again
    when the first batch builds the runtime.
    """
    if not settings.mongo_url:
        return None
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url, serverSelectionTimeoutMS=START_CHECK_TIMEOUT_MS
    )
    try:
        ensure_schema(client[settings.mongo_db])
    except SchemaMismatchError as exc:
        return str(exc)
    except pymongo.errors.PyMongoError as exc:
        log.warning("backfill metadata not checked at start (%s); the first batch will", exc)
    finally:
        client.close()
    return None
