"""MongoDB commands and bytes as the clients see them: a pymongo CommandListener per process.

SecantusDB's `serverStatus` has `network.bytesIn/bytesOut` but leaves them at 0, and its
`opcounters` count one per command where `mongod` counts inserts per document; a client
listener counts the same on both servers. Bytes are the BSON size of each command as
pymongo hands it to the listener (documents of a bulk write included) and of each reply:
the wire adds a few dozen bytes of message header per command on top. Server heartbeats
(`hello` on the monitor connections) are not command events, so they are not counted.

The worker processes load `bench.traffic_hook`, which writes this process's counts to a
file the bench sums (`read_dir`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import psutil
from pymongo import monitoring

FLUSH_SECONDS = 0.2  # how often a worker process writes its counts
FLUSH_WAIT_SECONDS = 5.0  # longest wait for every live worker to write counts newer than now
BENCH_PROBES = frozenset({"serverStatus"})  # the bench's own probes on its client
# How a bench worker loads the hook and where it writes its counts.
WORKER_ENV = "BENCH_TRAFFIC_DIR"
WORKER_ARGV = ("--include", "bench.traffic_hook")
# Diagnosis: BENCH_TRAFFIC_CALLERS=1 also names, per command, the function of ours that sent
# it ("find backfill_metadata <- store.lease_batch"); walking the stack costs CPU, so the
# CPU columns of such a run are not comparable.
CALLERS_ENV = "BENCH_TRAFFIC_CALLERS"
OUR_PACKAGES = ("backfill_engine", "backfill_workers", "orchestrator", "bench")


@dataclass
class Traffic:
    """Commands (by name) and bytes sent to / received from MongoDB by some clients."""

    commands: int = 0
    bytes_sent: int = 0  # requests, client -> server
    bytes_received: int = 0  # replies, server -> client
    # CPU the listener itself spent sizing commands and replies: the bench subtracts it
    # where it compares CPU, since no real run carries the listener
    listener_cpu_s: float = 0.0
    by_name: dict[str, int] = field(default_factory=dict)  # "find products": 12, ...

    def plus(self, other: Traffic) -> Traffic:
        names = {**self.by_name}
        for k, v in other.by_name.items():
            names[k] = names.get(k, 0) + v
        return Traffic(
            self.commands + other.commands,
            self.bytes_sent + other.bytes_sent,
            self.bytes_received + other.bytes_received,
            self.listener_cpu_s + other.listener_cpu_s,
            names,
        )

    def minus(self, before: Traffic) -> Traffic:
        names = {k: v - before.by_name.get(k, 0) for k, v in self.by_name.items()}
        return Traffic(
            self.commands - before.commands,
            self.bytes_sent - before.bytes_sent,
            self.bytes_received - before.bytes_received,
            self.listener_cpu_s - before.listener_cpu_s,
            dict(sorted(((k, v) for k, v in names.items() if v > 0), key=lambda kv: -kv[1])),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "commands": self.commands,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "listener_cpu_s": round(self.listener_cpu_s, 4),
            "by_name": dict(self.by_name),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Traffic:
        return cls(
            int(d.get("commands", 0)),
            int(d.get("bytes_sent", 0)),
            int(d.get("bytes_received", 0)),
            float(d.get("listener_cpu_s", 0.0)),
            {str(k): int(v) for k, v in (d.get("by_name") or {}).items()},
        )


class TrafficListener(monitoring.CommandListener):
    """Counts every command a client sends and the sizes of commands and replies."""

    def __init__(self, ignore: Iterable[str] = (), *, callers: bool | None = None) -> None:
        self.ignore = frozenset(ignore)
        self.callers = os.environ.get(CALLERS_ENV) == "1" if callers is None else callers
        self._lock = threading.Lock()
        self._totals = Traffic()

    def reset(self) -> None:
        """Start from zero (a forked child inherits its parent's counts)."""
        self._lock = threading.Lock()
        self._totals = Traffic()

    def snapshot(self) -> Traffic:
        with self._lock:
            return self._totals.plus(Traffic())

    def charge(self, cpu_s: float) -> None:
        """Count `cpu_s` of the bench's own work in this process (writing these counts) as
        the listener's, so it is taken out of the process's CPU like the listener's is."""
        with self._lock:
            self._totals.listener_cpu_s += cpu_s

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in self.ignore:
            return
        t0 = time.thread_time()
        size = len(bson.encode(event.command))
        # "find products", "update backfill_metadata": which collection costs what
        name = command_label(event.command_name, event.command)
        if self.callers:
            name += f" <- {_caller()}"
        with self._lock:
            t = self._totals
            t.commands += 1
            t.bytes_sent += size
            t.by_name[name] = t.by_name.get(name, 0) + 1
            t.listener_cpu_s += time.thread_time() - t0

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name in self.ignore:
            return
        t0 = time.thread_time()
        size = len(bson.encode(event.reply))
        with self._lock:
            self._totals.bytes_received += size
            self._totals.listener_cpu_s += time.thread_time() - t0

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """A failed command was counted when it started; its error reply is not sized."""


def _caller() -> str:
    """The innermost function of our packages on the stack (module.function)."""
    frame = sys._getframe(2)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith(OUR_PACKAGES) and not module.startswith("bench.traffic"):
            return f"{module.rsplit('.', 1)[-1]}.{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


def write_file(path: Path, listener: TrafficListener) -> None:
    """This process's counts, replaced atomically so a reader never sees half a file."""
    body = {"pid": os.getpid(), "at": time.time(), "traffic": listener.snapshot().as_dict()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(path)


def _read(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in directory.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(path.read_text()))
    return out


def read_dir(directory: Path, *, fresh_after: float | None = None) -> Traffic:
    """The sum of the counts the processes wrote into `directory`.

    With `fresh_after` (a `time.time()`), first waits until every process still alive has
    written counts taken after that moment, so nothing it did before is missed.
    """
    if fresh_after is not None:
        deadline = time.monotonic() + FLUSH_WAIT_SECONDS
        while time.monotonic() < deadline:
            stale = [
                b for b in _read(directory) if b["at"] < fresh_after and psutil.pid_exists(b["pid"])
            ]
            if not stale:
                break
            time.sleep(FLUSH_SECONDS / 2)
    total = Traffic()
    for body in _read(directory):
        total = total.plus(Traffic.from_dict(body["traffic"]))
    return total


@dataclass
class TrafficMeter:
    """Traffic of this process's client (`listener`) plus the workers' files, start to stop."""

    listener: TrafficListener
    directory: Path | None
    own: Traffic = field(default_factory=Traffic)  # this process's share, after stop()
    _before: tuple[Traffic, Traffic] = field(default_factory=lambda: (Traffic(), Traffic()))

    def _read(self) -> tuple[Traffic, Traffic]:
        own = self.listener.snapshot()
        if self.directory is None:
            return own, Traffic()
        return own, read_dir(self.directory, fresh_after=time.time())

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> Traffic:
        own, workers = self._read()
        self.own = own.minus(self._before[0])
        return self.own.plus(workers.minus(self._before[1]))


def command_label(name: str, command: Mapping[str, Any]) -> str:
    """ "find products", "update backfill_metadata"; a client bulkWrite names every
    collection it writes: "bulkWrite backfill_metadata+products"."""
    target = command.get(name)
    if isinstance(target, str):
        return f"{name} {target}"
    if name == "bulkWrite":
        colls = sorted(
            {str(ns.get("ns", "")).split(".", 1)[-1] for ns in command.get("nsInfo", [])}
        )
        if colls:
            return f"{name} {'+'.join(colls)}"
    return name
