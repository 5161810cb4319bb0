"""The suite's children start with Ctrl-C at its default, as they would from a terminal."""

from __future__ import annotations

import subprocess
import sys

PROBE = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"


def test_a_child_of_the_suite_is_interruptible_even_when_the_suite_was_started_deaf() -> None:
    # Started from a shell without job control, this process inherited SIGINT ignored;
    # tests/conftest.py gives it a handler, which exec resets to the default for children.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "True", "a child would ignore Ctrl-C: interrupt tests would hang"
