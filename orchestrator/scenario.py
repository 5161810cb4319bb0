"""What `backfill demo` and `backfill up` run besides the servers: a local scenario.

The local stack itself (MongoDB, Redis, workers, Flower, metrics) knows no backfill. A
scenario brings the rest: stand-ins for the APIs its backfills call, the documents to
seed, and the backfill the hints name. Packages register one under the entry-point
group `mongo_backfill.scenarios`; `BACKFILL_LOCAL_SCENARIO` picks one by name when
several are installed; pyproject.toml registers the one this project ships.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import click
from pymongo.database import Database

from orchestrator.errors import BackfillError
from orchestrator.stack import ManagedProcess

ENTRY_POINT_GROUP = "mongo_backfill.scenarios"
COMMANDS_ENTRY_POINT_GROUP = "mongo_backfill.commands"
SCENARIO_ENV = "BACKFILL_LOCAL_SCENARIO"


@dataclass(frozen=True)
class StandIn:
    """A local server that answers for an API, started when its URL variable is unset."""

    url_env: str  # the variable the backfill's HttpSource reads, e.g. RATINGS_URL
    label: str  # how the stack's banner names it
    start: Callable[[Path, int], ManagedProcess]  # (log_dir, latency_ms) -> process with .url


@dataclass(frozen=True)
class LocalScenario:
    name: str
    backfill: str  # the backfill `backfill run NAME` hints name
    collection: str  # where `seed` inserts and the demo counts
    synced_field: str  # the backfill's synced-at stamp: its presence counts as done
    seed: Callable[[Database, int], int]  # (db, target count) -> documents added now
    stand_ins: tuple[StandIn, ...] = ()
    # The migrations `backfill demo` applies (its backfill among them); `backfill up` applies
    # the first. The scenario's own, whatever project the command runs in.
    migrations_dir: Path | None = None

    def start_stand_ins(
        self, source_env: Mapping[str, str], log_dir: Path, latency_ms: int
    ) -> tuple[dict[str, str], list[ManagedProcess]]:
        """Start each stand-in whose URL is not set; (the URLs set now, their processes)."""
        urls: dict[str, str] = {}
        started: list[ManagedProcess] = []
        try:
            for s in self.stand_ins:
                if source_env.get(s.url_env):
                    continue  # the real API, or one the user started
                proc = s.start(log_dir, latency_ms)
                started.append(proc)
                assert proc.url is not None
                urls[s.url_env] = proc.url
        except BaseException:
            for proc in started:  # the caller never saw them: stop them here
                proc.stop()
            raise
        return urls, started


def registered() -> dict[str, LocalScenario]:
    """Every scenario an installed package registers, by name."""
    found: dict[str, LocalScenario] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        scenario = ep.load()
        if isinstance(scenario, LocalScenario):
            found[ep.name] = scenario
    return found


def load_scenario(env: Mapping[str, str]) -> LocalScenario:
    """The scenario `BACKFILL_LOCAL_SCENARIO` names, or the only one installed."""
    found = registered()
    wanted = env.get(SCENARIO_ENV)
    if wanted:
        if wanted not in found:
            known = ", ".join(sorted(found)) or "none"
            raise BackfillError(f"{SCENARIO_ENV}={wanted!r} is not installed (installed: {known})")
        return found[wanted]
    if len(found) != 1:
        known = ", ".join(sorted(found)) or "none"
        raise BackfillError(f"set {SCENARIO_ENV} to one of the installed scenarios: {known}")
    return next(iter(found.values()))


def scenario_commands() -> list[click.Command]:
    """The CLI verbs installed scenarios bring (entry point COMMANDS_ENTRY_POINT_GROUP),
    e.g. a stand-in's server; a broken one brings none. Loading them loads no scenario:
    a scenario's migrations are imported only by the commands that run it."""
    commands: list[click.Command] = []
    try:
        for ep in entry_points(group=COMMANDS_ENTRY_POINT_GROUP):
            command = ep.load()
            if isinstance(command, click.Command):
                commands.append(command)
    except Exception as exc:  # a broken plugin must not take the whole CLI down
        click.echo(f"warning: a local scenario did not load: {type(exc).__name__}: {exc}", err=True)
    return commands
