"""A running batch's lease, kept and proven: renewed in the background, checked before writes.

Nobody can take a batch before its lease expires (backfill_engine.store.lease_batch), so a
worker may write without a round trip while the lease surely has time left; otherwise it
renews the lease first and stops (`LeaseLost`) if another worker took the batch over.
"""

from __future__ import annotations

import threading
import time

from pymongo.collection import Collection

from backfill_engine import store
from backfill_engine.renewer import Renewer
from backfill_engine.states import JobStatus
from backfill_engine.store import Lease, read_job

# A running batch's LeaseKeeper re-reads the job's status this often, so a pause or cancel
# stops the batch within about this long plus one sub-chunk. Every task still reads the
# status itself before it takes its lease, so no batch starts after a pause.
STATUS_RECHECK_SECONDS = 1.0

STOPPING_JOB_STATES = (JobStatus.PAUSED, JobStatus.CANCELLED, JobStatus.FAILED)
MIN_WRITE_MARGIN_SECONDS = 10.0  # clock-offset error between hosts plus one write, with room


def write_margin(lease_seconds: float) -> float:
    """How much of the lease must be left for a write to go without re-proving the lease."""
    return max(MIN_WRITE_MARGIN_SECONDS, lease_seconds / 3)


class LeaseLost(Exception):
    """Another worker owns the batch now; stop without writing anything more."""


class LeaseKeeper:
    """Keeps a running batch informed without stopping it: renews its lease and re-reads
    its job's status in the background.

    `lost` is set if another worker took the batch over; `job_state` and `job_cap` are the
    job's status and `max_in_flight` as last read (at most STATUS_RECHECK_SECONDS old), so
    the batch checks pause and cancel between sub-chunks, and hands its slot on under the
    current cap, without a round trip of its own.
    """

    def __init__(
        self,
        coll: Collection,
        lease: Lease,
        lease_seconds: float,
        *,
        job_id: str,
        job_state: str,
        job_cap: object = None,
        recheck_seconds: float = STATUS_RECHECK_SECONDS,
        leased_at: float | None = None,
    ) -> None:
        self.coll, self.lease, self.lease_seconds = coll, lease, lease_seconds
        self.job_id, self.job_state, self.recheck_seconds = job_id, job_state, recheck_seconds
        self.job_cap = job_cap
        self.lost = threading.Event()
        # Until when (monotonic) the lease is surely ours: set from the send time of the last
        # update that extended it (lease, renewal, checkpoint), so it errs on the early side.
        self.valid_until = (time.monotonic() if leased_at is None else leased_at) + lease_seconds
        self._renewer = Renewer(
            self._renew,
            lease_seconds / 3,
            name="lease-keeper",
            lost=self.lost,
            poll=self._read_job_state,
            poll_seconds=recheck_seconds,
        )

    def extended(self, sent: float) -> None:
        """An update sent at `sent` (monotonic) extended the lease by a full lease period."""
        self.valid_until = max(self.valid_until, sent + self.lease_seconds)

    def surely_ours(self, margin: float) -> bool:
        """True while the lease cannot have expired for at least `margin` more seconds.

        Nobody can take a batch before its lease expires, so within that window a write
        needs no round trip to prove the lease is still ours.
        """
        return not self.lost.is_set() and time.monotonic() + margin < self.valid_until

    def __enter__(self) -> LeaseKeeper:
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._renewer.stop(timeout=5)

    def _read_job_state(self) -> None:
        job = read_job(self.coll, self.job_id, ("status", "max_in_flight"))
        self.job_state = job["status"] if job else JobStatus.CANCELLED.value
        self.job_cap = job.get("max_in_flight") if job else None

    def _renew(self) -> bool:
        # A failed round trip (PyMongoError) is left to the next round, the checkpoint or
        # the finish to tell: the Renewer carries on.
        sent = time.monotonic()
        if not store.renew_lease(self.coll, self.lease, self.lease_seconds):
            return False
        self.extended(sent)
        return True
