"""One renewal loop keeps batch leases and the migration lock alive (backfill_engine.renewer)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pymongo.errors

from backfill_engine.renewer import Renewer

ROOT = Path(__file__).resolve().parents[2]
TICK = 0.01


def _answers(*values: bool | BaseException) -> tuple[list[int], Callable[[], bool]]:
    """A renew() giving `values` in turn (raising the exceptions), then True; and its calls."""
    calls: list[int] = []

    def renew() -> bool:
        calls.append(1)
        value = values[len(calls) - 1] if len(calls) <= len(values) else True
        if isinstance(value, BaseException):
            raise value
        return value

    return calls, renew


def test_a_renewal_refused_sets_lost_and_ends_the_loop() -> None:
    calls, renew = _answers(True, True, False)
    told = threading.Event()
    renewer = Renewer(renew, TICK, name="t", on_lost=told.set)
    with renewer:
        assert renewer.lost.wait(20)
        renewer._thread.join(20)
        assert not renewer._thread.is_alive()  # nothing renews what another holder owns now
    assert len(calls) == 3 and told.is_set()


def test_a_server_blip_is_reported_and_renewal_goes_on() -> None:
    blip = pymongo.errors.AutoReconnect("blip")
    calls, renew = _answers(blip, True, False)
    seen: list[BaseException] = []
    renewer = Renewer(renew, TICK, name="t", on_transient=seen.append)
    with renewer:
        assert renewer.lost.wait(20)
    assert seen == [blip] and len(calls) == 3


def test_stop_ends_the_loop_and_nothing_renews_after_it() -> None:
    calls, renew = _answers()
    polled = threading.Event()
    renewer = Renewer(renew, TICK, name="t", poll=polled.set, poll_seconds=TICK)
    with renewer:
        while len(calls) < 3:
            time.sleep(TICK)
        assert polled.wait(20)
    assert not renewer._thread.is_alive()
    after_stop = len(calls)
    time.sleep(TICK * 20)
    assert len(calls) == after_stop and not renewer.lost.is_set()


def test_lease_keeper_and_migration_lock_start_no_thread_of_their_own() -> None:
    for path in ("backfill_engine/lease_keeper.py", "backfill_migrations/lock.py"):
        text = (ROOT / path).read_text()
        assert "Renewer(" in text and "threading.Thread(" not in text, path
