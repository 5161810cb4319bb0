"""Batch hooks: one module per concern around the batch core (backfill_engine.batch_run).

A team adds its own with BACKFILL_HOOKS=package.module:Class[,...]: each class is built
with no arguments once per batch delivery, and runs after the engine's hooks (so its
after-hooks run first).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from backfill_engine.dispatch import TaskSender
from backfill_engine.errors import BackfillError
from backfill_engine.hooks.base import BatchHook as BatchHook
from backfill_engine.hooks.base import HookChain as HookChain
from backfill_engine.hooks.dispatch import NextBatches
from backfill_engine.hooks.failure import FailurePolicy
from backfill_engine.hooks.health import HealthThrottle
from backfill_engine.hooks.source_stats import SourceStats
from backfill_engine.hooks.timings import Timings

if TYPE_CHECKING:
    from backfill_engine.runtime import Runtime

log = logging.getLogger(__name__)

__all__ = ["BatchHook", "HookChain", "HookImportError", "default_hooks", "hook_class"]


class HookImportError(BackfillError):
    """A BACKFILL_HOOKS entry that names no BatchHook class."""

    def __init__(self, spec: str, problem: str) -> None:
        self.spec = spec
        super().__init__(f"BACKFILL_HOOKS entry {spec!r}: {problem}")


def hook_class(spec: str) -> type[BatchHook]:
    """The class `module:Class` names; HookImportError unless it is a BatchHook."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HookImportError(spec, "expected module:Class")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # a team's module: one line, whatever it raised
        raise HookImportError(spec, f"{type(exc).__name__}: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, BatchHook)):
        raise HookImportError(spec, "is not a BatchHook subclass")
    return found


def default_hooks(rt: Runtime, sender: TaskSender) -> list[BatchHook]:
    """The engine's hooks for one delivery, then the team's (BACKFILL_HOOKS).

    The failure policy comes first: it answers `on_error` before any team hook can.
    """
    engine: list[BatchHook] = [
        FailurePolicy(rt, sender),
        NextBatches(rt, sender),
        Timings(),
        SourceStats(),
        HealthThrottle(rt.health),
    ]
    team: list[BatchHook] = []
    for cls in rt.hook_classes:
        try:
            team.append(cls())
        except Exception:  # a team's hook that cannot be built is left out, never fatal
            log.exception("hook %s could not be built; left out", cls.__name__)
    return engine + team
