"""What the bench watches while a scenario runs: memory, CPU, Redis and MongoDB traffic."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable

import psutil

SAMPLE_SECONDS = 0.25
MB = 1024 * 1024


class RssSampler:
    """Peak resident memory of each process in the trees rooted at `pids`, sampled in a thread."""

    def __init__(self, pids: Iterable[int], every: float = SAMPLE_SECONDS) -> None:
        self.roots = list(pids)
        self.every = every
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        for root in self.roots:
            try:
                proc = psutil.Process(root)
                procs = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    rss = p.memory_info().rss
                    self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)

    @property
    def peak_mb(self) -> float:
        """The highest RSS any single worker process reached, in MiB."""
        return max(self.peak.values(), default=0) / MB


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Redis calls per command between two INFO commandstats snapshots (zeros dropped)."""
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every user's processes included."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    return total - idle, total


def cpu_seconds(roots: Iterable[int], *, tree: bool = True) -> float:
    """User + system CPU seconds used so far by `roots` (and their live descendants if `tree`)."""
    total = 0.0
    for root in roots:
        try:
            proc = psutil.Process(root)
            procs = [proc, *proc.children(recursive=True)] if tree else [proc]
        except psutil.Error:
            continue
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


class CpuMeter:
    """CPU seconds per named group of process trees between `start()` and `stop()`."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._before = {name: self._read(name) for name in self.groups}

    def stop(self) -> dict[str, float]:
        self.used = {
            name: round(self._read(name) - self._before.get(name, 0.0), 2) for name in self.groups
        }
        return self.used

    def _read(self, name: str) -> float:
        return cpu_seconds(self.groups[name])
