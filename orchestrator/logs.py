"""Logging set-up: plain or JSON lines, always with secrets scrubbed."""

from __future__ import annotations

import json
import logging
import sys

from backfill_engine.redact import RedactingFilter
from backfill_engine.settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("job_id", "batch_no"):
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        return json.dumps(payload, default=str)


def configure_logging(*, json_lines: bool, verbosity: int, settings: Settings) -> None:
    """Send logs to stderr at WARNING (-v INFO, -vv DEBUG)."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter(settings.secrets))
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
