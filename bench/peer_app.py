"""The catalog backfill as a team without this tool writes it: one Celery task per 500 ids.

Each task reads its products by `_id`, asks the catalog stand-in for them (the same
batch endpoint and fields as the engine's catalog backfill), and `bulk_write`s a `$set`
of the fields that differ. No leases, checkpoints, quarantine, journal or global rate
limit: a lost or repeated task is the user's problem. Run by `celery -A bench.peer_app
worker`; configured by PEER_* environment variables, read once per process.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pymongo
import requests
from bson.objectid import ObjectId
from celery import Celery
from pymongo import UpdateOne
from pymongo.collection import Collection

from migrations.versions._catalog import CATALOG_FIELDS, CATALOG_PATH, PRODUCTS, SYNCED_AT_FIELD

TASK_NAME = "peer.enrich"
IDS_PER_REQUEST = 100  # the catalog's most ids per request, as the engine asks
HTTP_TIMEOUT_SECONDS = 10.0
RESULT_EXPIRES_SECONDS = 3600
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class PeerSettings:
    """Where the peer's workers find the database, the catalog and the broker."""

    mongo_url: str
    mongo_db: str
    catalog_url: str
    broker_url: str
    # Most ids one `$in` read names (0: one read per task). The bench gives the peer the
    # engine's BACKFILL_READ_IDS: the embedded server charges more than linearly for a long
    # `$in`, and the comparison should not be about that.
    read_ids: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PeerSettings:
        e = os.environ if env is None else env
        return cls(
            mongo_url=e.get("PEER_MONGO_URL", "mongodb://127.0.0.1:27017"),
            mongo_db=e.get("PEER_MONGO_DB", "peer"),
            catalog_url=e.get("PEER_CATALOG_URL", "http://127.0.0.1:8700").rstrip("/"),
            broker_url=e.get("PEER_BROKER_URL", DEFAULT_BROKER_URL),
            read_ids=int(e.get("PEER_READ_IDS", "0")),
        )

    def to_env(self) -> dict[str, str]:
        return {
            "PEER_MONGO_URL": self.mongo_url,
            "PEER_MONGO_DB": self.mongo_db,
            "PEER_CATALOG_URL": self.catalog_url,
            "PEER_BROKER_URL": self.broker_url,
            "PEER_READ_IDS": str(self.read_ids),
        }


def create_app(broker_url: str) -> Celery:
    """The peer's Celery app: JSON only, Redis broker and result backend, Celery's defaults."""
    celery = Celery("peer", broker=broker_url, backend=broker_url)
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_accept_content=["json"],
        result_expires=RESULT_EXPIRES_SECONDS,
        broker_connection_retry_on_startup=True,
        worker_redirect_stdouts=False,
    )
    celery.task(name=TASK_NAME)(enrich)
    return celery


@functools.cache
def _settings() -> PeerSettings:
    return PeerSettings.from_env()


@functools.cache
def _products() -> Collection:
    # Opened on first use, inside the pool process: a client must not cross a fork.
    s = _settings()
    return pymongo.MongoClient(s.mongo_url)[s.mongo_db][PRODUCTS]


@functools.cache
def _session() -> requests.Session:
    return requests.Session()


def enrich(ids: list[str]) -> dict[str, Any]:
    """Enrich the products with these ObjectId hex strings; returns counts and phase seconds."""
    t0 = time.perf_counter()
    oids = [ObjectId(i) for i in ids]
    wanted = {name: 1 for name in CATALOG_FIELDS}
    step = _settings().read_ids or len(oids)
    docs = {
        d["_id"]: d
        for start in range(0, len(oids), step)
        for d in _products().find({"_id": {"$in": oids[start : start + step]}}, wanted)
    }
    t_read = time.perf_counter()
    items: list[dict[str, Any]] = []
    for start in range(0, len(ids), IDS_PER_REQUEST):
        chunk = ids[start : start + IDS_PER_REQUEST]
        # The API splits on literal commas: each id is encoded, the commas are not.
        query = ",".join(quote(i, safe="") for i in chunk)
        url = f"{_settings().catalog_url}{CATALOG_PATH}?ids={query}"
        resp = _session().get(url, timeout=HTTP_TIMEOUT_SECONDS)
        resp.raise_for_status()
        items += resp.json()["items"]
    t_source = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    ops = []
    for item in items:
        oid = ObjectId(item["id"])
        doc = docs.get(oid, {})
        diff = {k: item[k] for k in CATALOG_FIELDS if doc.get(k) != item.get(k)}
        if diff:
            ops.append(UpdateOne({"_id": oid}, {"$set": {**diff, SYNCED_AT_FIELD: now}}))
    written = _products().bulk_write(ops, ordered=False).modified_count if ops else 0
    t_end = time.perf_counter()
    return {
        "written": written,
        "requests": -(-len(ids) // IDS_PER_REQUEST),
        "read_s": t_read - t0,
        "source_s": t_source - t_read,
        "write_s": t_end - t_source,
        "total_s": t_end - t0,
    }


app = create_app(_settings().broker_url)
