"""`--rate auto`: one controller per rate bucket moves the bucket's rate live.

Every worker reports each API answer (`record_answer`: a counter per kind and the last
latencies, in Redis), so whoever controls a bucket sees all workers' traffic. Every
worker process may run a `RateController`; per bucket a Redis lock (holder_lock.lua, renewed
each tick, lapsing 3 ticks after its holder dies) lets exactly one of them act. The
holder feeds the window to rate_policy.decide and stores the new rate in the bucket's
control hash, which ratelimit.lua reads on every acquire — every worker follows at once.
The rate and the reason for its last change are mirrored onto the jobs (`rate_auto`) for
`status` and the metrics.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import redis
from pymongo.database import Database

from backfill_engine.rate_policy import (
    LATENCY_SAMPLES,
    ControlState,
    Window,
    clamp,
    decide,
    with_ceiling,
)
from backfill_engine.ratelimit import KEY_PREFIX, control_key, limiter_name
from backfill_engine.states import ACTIVE_JOB_STATES, METADATA

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 1.0
OBSERVATIONS_TTL_SECONDS = 120  # a bucket nobody controls forgets its counters
CONTROL_TTL_SECONDS = 60  # the live rate outlives its controller this long, then lapses
MIRROR_SECONDS = 2.0  # a probing rate moves every tick; the job documents need less
MAX_WINDOW_TICKS = 10  # a holder back after a long stall treats the gap as this many ticks
AUTO_JOB_STATES = tuple(s.value for s in ACTIVE_JOB_STATES)

_HOLD_SCRIPT = (Path(__file__).with_name("holder_lock.lua")).read_text()


def observations_key(name: str) -> str:
    return f"{KEY_PREFIX}:{name}:answers"


def latencies_key(name: str) -> str:
    return f"{KEY_PREFIX}:{name}:latencies"


def lock_key(name: str) -> str:
    return f"{KEY_PREFIX}:{name}:controller"


def actors_key(name: str) -> str:
    """Ticks acted per controller id: who controlled the bucket, for status and tests."""
    return f"{KEY_PREFIX}:{name}:actors"


def record_answer(rds: redis.Redis, name: str, status: int, seconds: float) -> None:
    """Count one API answer (status 0: none came) of bucket `name` for its controller."""
    kind = "ok" if status == 200 else "throttled" if status == 429 else "other"
    pipe = rds.pipeline(transaction=False)
    pipe.hincrby(observations_key(name), kind, 1)
    pipe.expire(observations_key(name), OBSERVATIONS_TTL_SECONDS)
    if status == 200:
        # Only good answers: a 429 is answered at once and says nothing about load.
        pipe.lpush(latencies_key(name), f"{seconds:.6f}")
        pipe.ltrim(latencies_key(name), 0, LATENCY_SAMPLES - 1)
        pipe.expire(latencies_key(name), OBSERVATIONS_TTL_SECONDS)
    pipe.execute()


def read_control(rds: redis.Redis, name: str) -> dict[str, str]:
    """The bucket's control hash as stored (empty when no controller runs)."""
    raw: dict[Any, Any] = rds.hgetall(control_key(name))
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _state_from(raw: dict[str, str]) -> ControlState | None:
    if "rate" not in raw:
        return None
    values: dict[str, Any] = {}
    for f in fields(ControlState):
        text = raw.get(f.name)
        if text is None:
            continue
        if f.name in ("phase", "reason"):
            values[f.name] = text
        elif f.name == "ceiling":
            values[f.name] = float(text) if text else None
        elif f.name == "ok_since_cut":
            values[f.name] = int(text)
        else:
            values[f.name] = float(text)
    return ControlState(**values)


def _server_now(rds: redis.Redis) -> float:
    # One clock for every holder: hosts' clocks disagree, Redis' is shared (as in ratelimit.lua).
    seconds, micros = rds.time()
    return float(seconds) + micros / 1_000_000


class RateController:
    """Controls every bucket that an active `--rate auto` job uses, where it holds the lock."""

    def __init__(
        self,
        db: Database,
        rds: redis.Redis,
        queue: str,
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        holder: str | None = None,
    ) -> None:
        self.db, self.rds, self.queue, self.interval = db, rds, queue, interval
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._hold = rds.register_script(_HOLD_SCRIPT)
        self._mirrored: dict[str, tuple[float, float, str]] = {}  # name -> (at, rate, reason)

    def tick(self) -> list[str]:
        """One control step for each auto bucket this controller holds; the buckets acted on."""
        acted = []
        for bucket, (ceiling, start) in self._auto_buckets().items():
            name = limiter_name(self.queue, bucket)
            lease_ms = int(max(3 * self.interval, 1.0) * 1000)
            if not self._hold(keys=[lock_key(name)], args=[self.holder, lease_ms]):
                continue
            self._act(name, bucket, ceiling, start)
            acted.append(name)
        return acted

    def _auto_buckets(self) -> dict[str, tuple[float | None, float]]:
        """bucket -> (lowest ceiling, lowest current rate) over the active auto jobs."""
        out: dict[str, tuple[float | None, float]] = {}
        for job in self.db[METADATA].find(
            {"kind": "job", "status": {"$in": list(AUTO_JOB_STATES)}, "rate_auto": {"$ne": None}},
            {"rate_auto": 1, "rate_per_second": 1},
        ):
            auto = job.get("rate_auto") or {}
            bucket = auto.get("bucket")
            if not bucket:
                continue
            ceiling = auto.get("ceiling")
            start = float(auto.get("current") or job.get("rate_per_second") or 1.0)
            if bucket in out:
                old_ceiling, old_start = out[bucket]
                ceilings = [c for c in (old_ceiling, ceiling) if c is not None]
                out[bucket] = (min(ceilings) if ceilings else None, min(old_start, start))
            else:
                out[bucket] = (None if ceiling is None else float(ceiling), start)
        return out

    def _act(self, name: str, bucket: str, ceiling: float | None, start: float) -> None:
        now = _server_now(self.rds)
        raw = read_control(self.rds, name)
        state = _state_from(raw) or ControlState(rate=clamp(start, ceiling), ceiling=ceiling)
        last = float(raw.get("last_tick") or 0) or now - self.interval
        seconds = min(max(now - last, 0.0), MAX_WINDOW_TICKS * self.interval)
        window = self._drain(name, seconds)
        ceilinged = with_ceiling(state, ceiling, now)
        decision = decide(ceilinged.state, window, now)
        new = decision.state
        if ceilinged.changed or decision.changed:
            log.info("bucket %s: %.2f/s -> %.2f/s (%s)", name, state.rate, new.rate, new.reason)
        stored: dict[Any, Any] = {k: ("" if v is None else str(v)) for k, v in asdict(new).items()}
        stored.update(last_tick=now, holder=self.holder)
        pipe = self.rds.pipeline(transaction=True)
        pipe.hset(control_key(name), mapping=stored)
        pipe.expire(control_key(name), CONTROL_TTL_SECONDS)
        if decision.clear_latencies:
            pipe.delete(latencies_key(name))
        pipe.hincrby(actors_key(name), self.holder, 1)
        pipe.expire(actors_key(name), 3600)
        pipe.execute()
        self._mirror(name, bucket, new, now)

    def _drain(self, name: str, seconds: float) -> Window:
        """Take the answers counted since the last tick (and the latest latencies)."""
        pipe = self.rds.pipeline(transaction=True)
        pipe.hgetall(observations_key(name))
        pipe.delete(observations_key(name))
        pipe.lrange(latencies_key(name), 0, -1)
        counts, _, latencies = pipe.execute()
        c = {k.decode(): int(v) for k, v in counts.items()}
        return Window(
            seconds=seconds,
            ok=c.get("ok", 0),
            throttled=c.get("throttled", 0),
            other=c.get("other", 0),
            latencies=tuple(float(x) for x in latencies),
        )

    def _mirror(self, name: str, bucket: str, state: ControlState, now: float) -> None:
        """Show the rate on the bucket's jobs: at once after a cut, every few seconds otherwise."""
        at, rate, reason = self._mirrored.get(name, (0.0, -1.0, ""))
        if rate == state.rate:
            return
        if now - at < MIRROR_SECONDS and state.reason == reason:
            return
        changed_at = dt.datetime.fromtimestamp(state.changed_at or now, dt.UTC)
        self.db[METADATA].update_many(
            {"kind": "job", "status": {"$in": list(AUTO_JOB_STATES)}, "rate_auto.bucket": bucket},
            {
                "$set": {
                    "rate_auto.current": round(state.rate, 3),
                    "rate_auto.reason": state.reason,
                    "rate_auto.changed_at": changed_at,
                    # The live rate is also the job's rate: a batch falls back to it if the
                    # controller's hash lapses, and the metrics show it.
                    "rate_per_second": round(state.rate, 3),
                }
            },
        )
        self._mirrored[name] = (now, state.rate, state.reason)
