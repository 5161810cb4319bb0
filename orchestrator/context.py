"""What every CLI verb needs: settings, the (possibly embedded) servers, and connections."""

from __future__ import annotations

import atexit
import contextlib
from dataclasses import dataclass, field

import pymongo
import pymongo.errors
from pymongo.database import Database

from backfill_engine import clock
from backfill_engine.redact import redact_text, redact_url
from backfill_engine.schema import ensure_schema
from backfill_engine.settings import MONGO_MAX_IDLE_MS, Settings
from backfill_engine.sources import HttpSource
from orchestrator.errors import ServerUnreachableError
from orchestrator.stack import Stack, ensure_servers

MONGO_TIMEOUT_MS = 5000


def connect_mongo(settings: Settings, *, timeout_ms: int = MONGO_TIMEOUT_MS) -> Database:
    """Open the configured database and prove the server answers (else ServerUnreachableError)."""
    url = settings.mongo_url or ""
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            maxIdleTimeMS=MONGO_MAX_IDLE_MS,
            appname="mongo-backfill",
        )
        client.admin.command("ping")
    except (pymongo.errors.PyMongoError, ValueError) as exc:
        detail = redact_text(str(exc).splitlines()[0][:200], settings.secrets)
        raise ServerUnreachableError("MongoDB", redact_url(url), detail) from None
    clock.attach(client)  # leases and locks follow the server's clock, not this host's
    return client[settings.mongo_db]


SOURCE_PROBE_ID = "mongo-backfill-preflight"  # any id: the API answers item or missing


def check_source(source: HttpSource, settings: Settings) -> None:
    """Prove an HTTP source answers and takes our token, before a job is created for workers.

    Raises SourceUnavailableError or SourceAuthError (one line each, URL redacted).
    """
    from backfill_engine.http_client import SourceProtocolError
    from backfill_engine.runtime import http_client_for

    # A garbled answer is still an answer: workers quarantine such answers item by item.
    with (
        http_client_for(source.http, settings, shape=source.shape) as client,
        contextlib.suppress(SourceProtocolError),
    ):
        client.fetch([SOURCE_PROBE_ID])


@dataclass
class AppContext:
    """Lazily starts the embedded stack the first time a verb needs a server."""

    settings: Settings
    _stack: Stack | None = field(default=None, repr=False)
    _db: Database | None = field(default=None, repr=False)

    def stack(self) -> Stack:
        if self._stack is None:
            self._stack = ensure_servers(self.settings)
            atexit.register(self._stack.close)
            self.settings = self._stack.settings
        return self._stack

    def resolved_settings(self) -> Settings:
        """Settings with MONGO_URL/REDIS_URL filled in (starting embedded servers if unset)."""
        if self.settings.mongo_url is None or self.settings.redis_url is None:
            self.stack()
        return self.settings

    def db(self, *, engine: bool = True) -> Database:
        """The database, with the engine's collections set up (once per process) by default.

        Migration verbs ask with `engine=False`: `migrate status` creates nothing, and the
        migrations decide what the engine's collections become.
        """
        if self._db is None:
            if self.settings.mongo_url is None:
                self.stack()
            self._db = connect_mongo(self.settings)
        if engine:
            ensure_schema(self._db)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.client.close()
            self._db = None
        if self._stack is not None:
            self._stack.close()
            self._stack = None
