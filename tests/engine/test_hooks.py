"""The hook runner: before-hooks in order, after-hooks reversed, a raising hook logged and
skipped, the first failure-policy answer deciding. Pure: no server."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from backfill_engine.batch_context import BatchContext
from backfill_engine.batch_outcome import BatchOutcome, Decision
from backfill_engine.hooks import BatchHook, HookChain, HookImportError, hook_class

ALL_METHODS = (
    "before_batch",
    "after_batch",
    "before_subchunk",
    "before_source",
    "after_source",
    "after_write",
    "after_phase",
    "checkpoint_fields",
    "on_error",
    "on_unknown_backfill",
)


def _batch() -> BatchContext:
    return BatchContext.new("job-1", 3, "w", logging.getLogger("test.hooks"))


class Recording(BatchHook):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def before_batch(self, batch: BatchContext) -> None:
        self.calls.append(f"{self.name}.before_batch")

    def after_batch(self, batch: BatchContext, outcome: BatchOutcome) -> None:
        self.calls.append(f"{self.name}.after_batch")


class Raising(BatchHook):
    """Raises in every method the base class has."""

    def __getattribute__(self, name: str) -> Any:
        if name in ALL_METHODS:

            def boom(*args: Any) -> Any:
                raise RuntimeError(f"boom in {name}")

            return boom
        return super().__getattribute__(name)


def test_after_hooks_run_in_reverse_order() -> None:
    calls: list[str] = []
    chain = HookChain([Recording("a", calls), Recording("b", calls), Recording("c", calls)])
    batch = _batch()
    chain.before("before_batch", batch)
    chain.after("after_batch", batch, BatchOutcome.DONE)
    assert calls == [
        "a.before_batch",
        "b.before_batch",
        "c.before_batch",
        "c.after_batch",
        "b.after_batch",
        "a.after_batch",
    ]


def test_a_raising_hook_is_logged_with_job_and_batch_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    chain = HookChain([Recording("a", calls), Raising(), Recording("c", calls)])
    batch = _batch()
    with caplog.at_level(logging.ERROR, "test.hooks"):
        chain.before("before_batch", batch)
        chain.after("after_batch", batch, BatchOutcome.DONE)
        with chain.phase(batch, "read"):
            pass
        assert chain.checkpoint_fields(batch, final=True) == {}
        assert chain.decide(batch, TimeoutError("slow")) is None
    assert calls == ["a.before_batch", "c.before_batch", "c.after_batch", "a.after_batch"]
    lines = [r.getMessage() for r in caplog.records]
    for method in ("before_batch", "after_batch", "after_phase", "checkpoint_fields", "on_error"):
        assert f"[job job-1 batch 3] hook Raising.{method} failed; ignored" in lines, lines


def test_the_first_failure_policy_answer_decides_and_a_raising_one_is_passed_over() -> None:
    class Pauses(BatchHook):
        def on_error(self, batch: BatchContext, exc: BaseException) -> Decision | None:
            return Decision.pause("e", "why", BatchOutcome.AUTH_PAUSED)

    class Fails(BatchHook):
        def on_error(self, batch: BatchContext, exc: BaseException) -> Decision | None:
            return Decision.fail("e")

    batch, exc = _batch(), TimeoutError("slow")
    assert HookChain([BatchHook(), Pauses(), Fails()]).decide(batch, exc) == Decision.pause(
        "e", "why", BatchOutcome.AUTH_PAUSED
    )
    assert HookChain([Raising(), Fails()]).decide(batch, exc) == Decision.fail("e")
    assert HookChain([BatchHook()]).decide(batch, exc) is None


def test_checkpoint_fields_add_counts_keep_only_numbers_and_timings_only_at_the_finish() -> None:
    class Counts(BatchHook):
        def checkpoint_fields(self, batch: BatchContext, final: bool) -> dict[str, Any]:
            return {
                "source_inc": {"requests": 2, "bad": "x", "flag": True},
                "timings": {"read_s": 0.5},
                "status": "done",  # not a field a hook may set
            }

    chain = HookChain([Counts(), Counts()])
    assert chain.checkpoint_fields(_batch(), final=False) == {"source_inc": {"requests": 4}}
    assert chain.checkpoint_fields(_batch(), final=True) == {
        "source_inc": {"requests": 4},
        "timings": {"read_s": 0.5},
    }


def test_hook_specs_name_a_batch_hook_class() -> None:
    assert hook_class("backfill_engine.hooks.timings:Timings").__name__ == "Timings"
    for spec, problem in (
        ("backfill_engine.hooks.timings", "expected module:Class"),
        ("no_such_module_here:Hook", "ModuleNotFoundError"),
        ("backfill_engine.hooks.timings:Stopwatch", "not a BatchHook subclass"),
    ):
        with pytest.raises(HookImportError, match=problem):
            hook_class(spec)
