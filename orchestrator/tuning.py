"""What `backfill set` writes: validated new values for a job, as one update and its record."""

from __future__ import annotations

from typing import Any

from backfill_engine.errors import BackfillError
from backfill_engine.settings import MAX_BATCH_SIZE
from backfill_engine.store import now_utc
from orchestrator.rates import RateSpec, auto_bucket, parse_rate

MAX_IN_FLIGHT_LIMIT = 10_000


def tuning_update(
    job: dict[str, Any],
    *,
    rate: str | float | None = None,
    max_in_flight: int | None = None,
    batch_size: int | None = None,
    definitions: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(MongoDB update, {field: {"from": old, "to": new}}) for the asked changes; BackfillError
    naming the option for a bad value, or when nothing was asked."""
    sets: dict[str, Any] = {}
    unsets: dict[str, str] = {}
    changes: dict[str, Any] = {}
    if max_in_flight is not None:
        if isinstance(max_in_flight, bool) or not 1 <= max_in_flight <= MAX_IN_FLIGHT_LIMIT:
            raise BackfillError(
                f"--max-in-flight must be between 1 and {MAX_IN_FLIGHT_LIMIT}, got {max_in_flight}"
            )
        sets["max_in_flight"] = int(max_in_flight)
        changes["max_in_flight"] = {"from": job.get("max_in_flight"), "to": int(max_in_flight)}
    if batch_size is not None:
        if isinstance(batch_size, bool) or not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise BackfillError(
                f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}"
            )
        sets["batch_size"] = int(batch_size)
        changes["batch_size"] = {"from": job.get("batch_size"), "to": int(batch_size)}
    if rate is not None:
        try:
            spec = parse_rate(rate) if isinstance(rate, str) else _fixed(rate)
        except BackfillError as exc:
            raise BackfillError(f"--rate: {exc}") from None
        before = describe_rate(job)
        if spec.auto:
            sets["rate_auto"] = _auto_doc(job, spec, definitions)
        else:
            assert spec.fixed is not None
            sets["rate_per_second"] = spec.fixed
            unsets["rate_auto"] = ""
        changes["rate"] = {"from": before, "to": _describe_spec(spec)}
    if not changes:
        raise BackfillError("nothing to change: give --rate, --max-in-flight or --batch-size")
    update: dict[str, Any] = {"$set": sets}
    if unsets:
        update["$unset"] = unsets
    return update, changes


def describe_rate(job: dict[str, Any]) -> str:
    """A job's rate as `--rate` spells it: `50/s`, `auto` or `auto:200/s`."""
    auto = job.get("rate_auto")
    if auto:
        ceiling = auto.get("ceiling")
        return "auto" if ceiling is None else f"auto:{ceiling:g}/s"
    return f"{float(job.get('rate_per_second') or 0):g}/s"


def _describe_spec(spec: RateSpec) -> str:
    if spec.auto:
        return "auto" if spec.ceiling is None else f"auto:{spec.ceiling:g}/s"
    return f"{spec.fixed:g}/s"


def _fixed(rate: float) -> RateSpec:
    if isinstance(rate, bool) or not rate > 0 or rate == float("inf"):
        raise BackfillError(f"rate must be above 0, got {rate!r}")
    return RateSpec(fixed=float(rate))


def _auto_doc(
    job: dict[str, Any], spec: RateSpec, definitions: dict[str, Any] | None
) -> dict[str, Any]:
    """The job's new `rate_auto`: the controller continues from the job's current rate."""
    current = float(job.get("rate_per_second") or 1.0)
    if spec.ceiling is not None:
        current = min(current, spec.ceiling)
    old = job.get("rate_auto") or {}
    bucket = old.get("bucket") or _bucket_of(job, definitions)
    return spec.auto_doc(bucket, current, "set by operator", now_utc())


def _bucket_of(job: dict[str, Any], definitions: dict[str, Any] | None) -> str:
    # Imported here: the definitions are loaded only when a job turns to auto.
    from backfill_engine.registry import lookup
    from backfill_engine.runtime import worker_definitions
    from backfill_engine.settings import Settings

    if definitions is None:
        definitions = worker_definitions(Settings.from_env())
    return auto_bucket(lookup(definitions, str(job.get("backfill"))))
