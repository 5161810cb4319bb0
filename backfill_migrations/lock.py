"""A lease lock that serialises migration runners: one document, an owner token, an expiry.

The holder renews the lease from a background thread (backfill_engine.renewer, the loop
that also keeps batch leases) every third of the lease while a migration runs, so a long
`up` keeps it; a runner that dies stops renewing and its lease simply expires. Expiry is
compared with the runners' clocks, so hosts need roughly synced time (skew must stay well
below the lease).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from types import TracebackType
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from backfill_engine import clock
from backfill_engine.renewer import Renewer
from backfill_migrations.errors import LockLostError, LockTimeoutError

LOCK_COLLECTION = "schema_migrations_lock"
LOCK_ID = "lock"
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.25  # between attempts while another runner holds the lock

log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    # The database server's clock, so a runner on a host whose clock is off can neither
    # take a live lock nor keep a dead one. BSON dates come back naive (UTC): stay naive.
    return clock.now().replace(tzinfo=None)


class Lease:
    """The runner lock; use as a context manager around a whole run."""

    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        self._coll = db[LOCK_COLLECTION]
        clock.attach(db.client)
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._held = False
        self._lost = threading.Event()
        self._renewer: Renewer | None = None

    # --- acquire / release ---------------------------------------------------------------

    def _try_acquire(self) -> bool:
        now = _now()
        try:
            # Matches a free (expired) lock or our own; when someone else holds a live lease
            # nothing matches and the upsert collides on _id instead.
            self._coll.find_one_and_update(
                {"_id": LOCK_ID, "$or": [{"expires_at": {"$lte": now}}, {"owner": self.token}]},
                {
                    "$set": {
                        "owner": self.token,
                        "host": self.host,
                        "pid": self.pid,
                        "acquired_at": now,
                        "expires_at": now + dt.timedelta(seconds=self.lease_seconds),
                    }
                },
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    def holder(self) -> dict[str, Any] | None:
        """The current lock document, if any (for messages and status)."""
        return self._coll.find_one({"_id": LOCK_ID})

    def acquire(self) -> None:
        """Take the lock, waiting up to wait_seconds; raise LockTimeoutError naming the holder."""
        deadline = time.monotonic() + self.wait_seconds
        announced = False
        while not self._try_acquire():
            if time.monotonic() >= deadline:
                doc = self.holder() or {}
                raise LockTimeoutError(
                    str(doc.get("host", "?")),
                    doc.get("pid"),
                    self.wait_seconds,
                    str(doc.get("expires_at", "?")),
                )
            if not announced:
                doc = self.holder() or {}
                log.info(
                    "migration lock held by %s pid %s; waiting up to %gs",
                    doc.get("host"),
                    doc.get("pid"),
                    self.wait_seconds,
                )
                announced = True
            time.sleep(POLL_SECONDS)
        self._held = True
        self._lost.clear()
        self._start_renewal()

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours."""
        if self._renewer is not None:
            self._renewer.stop(timeout=self.lease_seconds)
            self._renewer = None
        if self._held:
            self._held = False
            try:
                self._coll.delete_one({"_id": LOCK_ID, "owner": self.token})
            except PyMongoError as exc:
                # Not fatal: the lease expires by itself.
                log.warning("could not release migration lock: %s", exc)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # --- renewal -------------------------------------------------------------------------

    def _renew(self) -> bool:
        now = _now()
        result = self._coll.update_one(
            {"_id": LOCK_ID, "owner": self.token, "expires_at": {"$gt": now}},
            {"$set": {"expires_at": now + dt.timedelta(seconds=self.lease_seconds)}},
        )
        return result.matched_count == 1

    def _start_renewal(self) -> None:
        self._renewer = Renewer(
            self._renew,
            self.lease_seconds / 3,
            name="migration-lock-renewal",
            lost=self._lost,
            on_lost=lambda: log.error("migration lock lost: lease expired or taken over"),
            # A blip: retry at the next tick; confirm() decides if the lease really lapsed.
            on_transient=lambda exc: log.warning("migration lock renewal failed: %s", exc),
        )
        self._renewer.start()

    # --- the guard every history write calls ----------------------------------------------

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def confirm(self) -> None:
        """Prove we still own the lock (and extend it) before a write; raise LockLostError."""
        if not self._held or self._lost.is_set() or not self._renew():
            self._lost.set()
            raise LockLostError()
