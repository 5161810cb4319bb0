"""Start a batch worker: Celery's own `worker` command, without the rest of Celery's CLI.

`celery -A backfill_workers.app worker ...` first imports every Celery subcommand and every
installed plugin (Flower's web application among them) to run one of them: about a third
of a worker's start-up CPU. `python -m backfill_workers.start ...` runs the same click
command, with the same options and defaults, on this package's app. Both start the same
worker; `backfill worker` and the embedded stack use this one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from celery.bin.base import CLIContext
from celery.bin.worker import worker as celery_worker

from backfill_workers.app import app


def main(args: Sequence[str] | None = None) -> None:
    """Run `celery worker` with `args` (default: this process's arguments); exits with its code."""
    context = CLIContext(app=app, no_color=bool(os.environ.get("NO_COLOR")), workdir=None)
    celery_worker.main(
        args=list(sys.argv[1:] if args is None else args),
        prog_name="python -m backfill_workers.start",
        obj=context,
    )


if __name__ == "__main__":
    main()
