"""A finishing batch hands its in-flight slot on to the next pending batch.

The dispatch lock (backfill_engine.dispatch.fill_in_flight) takes the lock, reads the job,
counts the batches in flight, claims and drops the lock: six commands after every batch.
A batch that finishes frees exactly one slot, so it can claim one pending batch instead,
with no count: in flight stays what it was, at most the cap. The claim is made while the
batch still runs (so a counted fill meanwhile never sees the slot free twice) and undone
if the finish then finds the lease lost.

Only while the cap is the one this batch was queued under (`dispatch_cap` on the batch,
`max_in_flight` on the job as the batch's LeaseKeeper last read it, at most a second old):
after a `set --max-in-flight`, or for a batch queued by an older release, the counted fill
decides, so a lower cap holds for every batch that finishes a second or more after it and
a higher one is filled at the next finish, as before. A handed-on batch shows as queued
while its predecessor finishes; running batches never exceed the cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backfill_engine.states import JobStatus


def handoff_cap(job_cap: object, batch: Mapping[str, Any], job_state: str) -> int | None:
    """The cap a finishing batch may claim its successor under; None: the counted fill decides.

    `job_cap` is the job's `max_in_flight` as last read, `job_state` its status.
    """
    if job_state != JobStatus.RUNNING.value:
        return None
    cap, mine = job_cap, batch.get("dispatch_cap")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap != mine:
        return None
    return cap


@dataclass(frozen=True)
class Handoff:
    """What a finishing batch did about its slot, for the after-batch dispatch."""

    claimed: Mapping[str, Any] | None  # the batch queued in this one's place; None: none pending
    total: int | None = None  # the job's batch count, for the task's title (None: planning)
