"""A command ends when its work is done: it does not wait for the driver's threads to wake.

pymongo joins every monitor thread at exit, each asleep in half-second steps, so every
`backfill` command waited up to 0.5 s after printing its answer (`status` took 1.2 s, of
which 0.5 s was that wait). The wrapper below records each such join.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from pymongo.database import Database

from backfill_engine.settings import Settings

RECORD_JOINS = textwrap.dedent(
    """
    import sys
    import pymongo.periodic_executor as pe

    joined = pe.PeriodicExecutor.join

    def join(self, timeout=None):
        sys.stderr.write("driver thread joined\\n")
        return joined(self, timeout)

    pe.PeriodicExecutor.join = join
    from orchestrator.cli import main

    sys.argv = ["backfill", *sys.argv[1:]]
    main()
    """
)


def test_a_command_exits_without_joining_the_drivers_monitor_threads(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    env = {**settings.to_env(), "BACKFILL_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", RECORD_JOINS, "jobs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    assert "no jobs yet" in proc.stdout  # it did connect: the driver's threads were running
    assert proc.stderr == ""  # no join, and nothing else from threads dropped at exit
