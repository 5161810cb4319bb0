"""Throttle on database health: hold new sub-chunks while MongoDB is strained.

Like maintenance_tasks' `throttle_on` and gh-ost's throttling: each worker process keeps
the latencies of its last WINDOW_SIZE document writes, and while their p95 exceeds
BACKFILL_MAX_WRITE_LATENCY_MS (or, on a replica set, the majority lags more than
BACKFILL_MAX_REPLICATION_LAG_SECONDS) a batch waits before its next sub-chunk.

The hold cannot deadlock itself: while nothing is written, a probe (a no-op update on the
metadata collection, so it takes the same write path a document write does) measures the
database again every PROBE_SECONDS; and after MAX_HOLD_SECONDS one sub-chunk goes through
anyway, so a wrong or stuck signal slows a job to a trickle but never stops it. The job
document's `throttle` field says who holds and why, for `status` and the metrics.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pymongo.errors
from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_engine.states import DISPATCHABLE_JOB_STATES, METADATA
from backfill_engine.store import now_utc

log = logging.getLogger(__name__)

WINDOW_SIZE = 50  # document writes per process the p95 is taken over
MIN_SAMPLES = 5  # fewer writes than this say too little to hold anything back
RECOVERY_SAMPLES = 3  # consecutive fast probes or writes that end a hold
STEP_SECONDS = 0.25  # a holding batch re-checks pause, cancel and lease loss this often
PROBE_SECONDS = 0.5  # at most one probe write per process this often while holding
MAX_HOLD_SECONDS = 5.0  # then one sub-chunk goes through: a trickle, never a standstill
LAG_CHECK_SECONDS = 5.0  # replSetGetStatus at most this often per process
REPORT_SECONDS = 3.0  # a holding process refreshes the job's `throttle` at most this often
# A `throttle` record not refreshed for this long is a holder that died or moved on.
STALE_SECONDS = 30.0
PROBE_ID = "health-probe"  # never exists: the probe update matches nothing and writes nothing

WRITE_LATENCY = "write_latency"
REPLICATION_LAG = "replication_lag"
REASON_KINDS = (WRITE_LATENCY, REPLICATION_LAG)

# replSetGetStatus member states that hold data and count towards a write majority.
_PRIMARY, _SECONDARY = 1, 2


class Interruptible(Protocol):
    """What a holding batch watches: backfill_engine.batch_run.LeaseKeeper."""

    lost: threading.Event
    job_state: str


@dataclass(frozen=True)
class Verdict:
    """Why new sub-chunks should wait: the kind (a metric label) and the words for people."""

    kind: str
    reason: str


class LatencyWindow:
    """The last `size` latencies (seconds) and their p95; not thread-safe (HealthGate locks)."""

    def __init__(self, size: int = WINDOW_SIZE) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._values)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def p95(self) -> float | None:
        """Nearest-rank 95th percentile; None while the window is empty."""
        if not self._values:
            return None
        ordered = sorted(self._values)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    def recent(self, n: int) -> list[float]:
        """The `n` newest latencies, oldest first."""
        return list(self._values)[-n:]

    def keep_only(self, n: int) -> None:
        """Forget all but the `n` newest: after a recovery, old slow writes judge nothing."""
        newest = self.recent(n)
        self._values.clear()
        self._values.extend(newest)


def write_verdict(window: LatencyWindow, max_seconds: float) -> Verdict | None:
    """A hold while the window's p95 is over `max_seconds` (0 turns the check off)."""
    p95 = window.p95()
    if max_seconds <= 0 or p95 is None or len(window) < MIN_SAMPLES or p95 <= max_seconds:
        return None
    return Verdict(WRITE_LATENCY, f"write p95 {p95 * 1000:.0f} ms > {max_seconds * 1000:.0f} ms")


def recovered(window: LatencyWindow, max_seconds: float) -> bool:
    """The newest RECOVERY_SAMPLES writes or probes were all fast enough."""
    recent = window.recent(RECOVERY_SAMPLES)
    return len(recent) == RECOVERY_SAMPLES and all(v <= max_seconds for v in recent)


def majority_lag_seconds(status: Mapping[str, Any]) -> float:
    """How far the write majority trails the primary, from a replSetGetStatus reply.

    Members holding data are ranked by optime, newest first; the one at the majority's
    rank is the newest point a majority has reached. One member: 0. Members that are down
    report stale optimes and so count as lagging, as they do for a majority write.
    """
    members = [m for m in status.get("members", []) if m.get("state") in (_PRIMARY, _SECONDARY)]
    primary = next((m for m in members if m.get("state") == _PRIMARY), None)
    if primary is None or len(members) < 2:
        return 0.0
    times = sorted((_optime(m) for m in members), reverse=True)
    majority = int(status.get("writeMajorityCount") or len(times) // 2 + 1)
    committed = times[min(majority, len(times)) - 1]
    return max(0.0, (_optime(primary) - committed).total_seconds())


def _optime(member: Mapping[str, Any]) -> dt.datetime:
    when = member.get("optimeDate")
    if not isinstance(when, dt.datetime):
        return dt.datetime.min
    return when.replace(tzinfo=None)


@dataclass(frozen=True)
class ThrottleView:
    """A job's `throttle` record as status and metrics show it."""

    kind: str
    reason: str
    since: dt.datetime | None
    until: dt.datetime | None
    seen_at: dt.datetime | None  # the holder's last refresh: the end of a record left open
    active: bool


def throttle_view(job: Mapping[str, Any], now: dt.datetime) -> ThrottleView | None:
    """The job's throttle record; `active` only while a live holder refreshes it."""
    rec = job.get("throttle")
    if not isinstance(rec, Mapping) or not rec.get("reason"):
        return None
    seen = _aware(rec.get("seen_at"))
    fresh = seen is not None and (now - seen).total_seconds() <= STALE_SECONDS
    running = job.get("status") in DISPATCHABLE_JOB_STATES
    until = _aware(rec.get("until"))
    return ThrottleView(
        kind=str(rec.get("kind") or WRITE_LATENCY),
        reason=str(rec["reason"]),
        since=_aware(rec.get("since")),
        until=until,
        seen_at=seen,
        active=until is None and fresh and running,
    )


def _aware(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class HealthGate:
    """One per worker process, shared by its batch threads: measures, judges, holds, reports."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.max_write = settings.max_write_latency_ms / 1000.0
        self.max_lag = settings.max_replication_lag_seconds
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._window = LatencyWindow()
        self._holding = False  # this process holds its sub-chunks back right now
        self._lag: float = 0.0
        self._lag_due = 0.0  # monotonic time of the next replSetGetStatus
        self._lag_supported = True
        self._next_probe = 0.0
        self._since: dt.datetime | None = None  # when this process began holding
        # job id -> (monotonic time of our last write to its `throttle`, whether it says held)
        self._reported: dict[str, tuple[float, bool]] = {}

    @contextlib.contextmanager
    def timed_write(self) -> Iterator[None]:
        """Time one document write into the window (a failed write's time counts too)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.record(time.perf_counter() - t0)

    def record(self, seconds: float) -> None:
        with self._lock:
            self._window.add(seconds)

    def verdict(self) -> Verdict | None:
        """Why to hold right now, or None; a hold ends only after RECOVERY_SAMPLES fast ones."""
        lag = self._replication_lag()
        with self._lock:
            slow = write_verdict(self._window, self.max_write)
            if slow is not None and self._holding and recovered(self._window, self.max_write):
                self._window.keep_only(RECOVERY_SAMPLES)
                slow = None
            self._holding = slow is not None
        if slow is None and self.max_lag > 0 and lag > self.max_lag:
            return Verdict(REPLICATION_LAG, f"replication lag {lag:.1f} s > {self.max_lag:g} s")
        return slow

    def hold(self, job_id: str, keeper: Interruptible) -> float:
        """Wait while the database is strained; return the seconds held (0 when healthy).

        Returns early on pause, cancel or lease loss (the caller's checks act on them), and
        after MAX_HOLD_SECONDS so one sub-chunk goes through.
        """
        started = time.monotonic()
        verdict = self.verdict()
        if verdict is None:
            self._report_released(job_id)
            return 0.0
        if self._since is None:
            # Kept across holds cut short by MAX_HOLD_SECONDS: the trickle is one throttle.
            self._since = now_utc()
            log.info("[job %s] holding new sub-chunks: %s", job_id, verdict.reason)
        since = self._since
        while verdict is not None:
            if keeper.lost.is_set() or keeper.job_state not in _RUNNABLE:
                break
            self._report_held(job_id, verdict, since)
            if time.monotonic() - started >= MAX_HOLD_SECONDS:
                break  # the job keeps the "held" record: it trickles, one sub-chunk at a time
            time.sleep(STEP_SECONDS)
            self._probe()
            verdict = self.verdict()
        if verdict is None:
            log.info("[job %s] database healthy again; sub-chunks go on", job_id)
            self._since = None
            self._report_released(job_id)
        return time.monotonic() - started

    def _probe(self) -> None:
        """One no-op update timed into the window, by one holding thread at a time."""
        if time.monotonic() < self._next_probe or not self._probe_lock.acquire(blocking=False):
            return
        try:
            self._next_probe = time.monotonic() + PROBE_SECONDS
            t0 = time.perf_counter()
            # A failing database is no healthier: the time a failed probe took counts too.
            with contextlib.suppress(pymongo.errors.PyMongoError):
                self.db[METADATA].update_one({"_id": PROBE_ID}, {"$set": {"probe": True}})
            self.record(time.perf_counter() - t0)
        finally:
            self._probe_lock.release()

    def _replication_lag(self) -> float:
        """The majority's lag as last read; read again at most every LAG_CHECK_SECONDS."""
        if self.max_lag <= 0 or not self._lag_supported or time.monotonic() < self._lag_due:
            return self._lag
        self._lag_due = time.monotonic() + LAG_CHECK_SECONDS
        try:
            status = self.db.client.admin.command("replSetGetStatus")
        except pymongo.errors.OperationFailure as exc:
            # A standalone mongod (NoReplicationEnabled) or a user without the privilege.
            self._lag_supported = False
            log.warning("replication lag not checked: replSetGetStatus failed (%s)", exc.code)
            return 0.0
        except pymongo.errors.PyMongoError:
            return self._lag  # the next check tells; write latency covers an outage
        self._lag = majority_lag_seconds(status)
        return self._lag

    def _report_held(self, job_id: str, verdict: Verdict, since: dt.datetime) -> None:
        """Say on the job who holds and why, at most every REPORT_SECONDS per process."""
        with self._lock:  # one reporting thread per process and job, at most every few seconds
            last, _held = self._reported.get(job_id, (-math.inf, False))
            if time.monotonic() - last < REPORT_SECONDS:
                return
            self._reported[job_id] = (time.monotonic(), True)
        now = now_utc()
        record = {
            "kind": verdict.kind,
            "reason": verdict.reason,
            "since": since,
            "until": None,
            "seen_at": now,
            "worker": self.worker,
        }
        self._write(job_id, {"_id": job_id, "kind": "job"}, {"$set": {"throttle": record}})

    def _report_released(self, job_id: str) -> None:
        """Close the job's record if this process wrote it last: once per hold."""
        with self._lock:
            last, held = self._reported.get(job_id, (-math.inf, False))
            if not held:
                return
            self._reported[job_id] = (last, False)
        now = now_utc()
        self._write(
            job_id,
            {"_id": job_id, "kind": "job", "throttle.worker": self.worker, "throttle.until": None},
            {"$set": {"throttle.until": now, "throttle.seen_at": now}},
        )

    def _write(self, job_id: str, query: dict[str, Any], update: dict[str, Any]) -> None:
        try:
            self.db[METADATA].update_one(query, update)
        except pymongo.errors.PyMongoError as exc:
            log.warning("[job %s] throttle not recorded: %s", job_id, type(exc).__name__)


_RUNNABLE = tuple(s.value for s in DISPATCHABLE_JOB_STATES)
