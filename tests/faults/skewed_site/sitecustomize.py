"""Applies tests/faults/skewed.py's clock offset at interpreter start (SKEWED_CLOCK_SECONDS)."""

import importlib.util
import os
from pathlib import Path

if os.environ.get("SKEWED_CLOCK_SECONDS"):
    _spec = importlib.util.spec_from_file_location(
        "_skewed_clock", Path(__file__).resolve().parent.parent / "skewed.py"
    )
    assert _spec and _spec.loader
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    _module.install_from_env()
