"""Flower for the local stack (`demo`, `up`): always behind basic auth, on a free port."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import replace
from pathlib import Path

from backfill_engine.settings import Settings
from orchestrator.stack import LOOPBACK, ManagedProcess, free_port, start_flower

AUTH_FILE = "flower.auth"


def flower_credentials(data_dir: Path) -> tuple[str, Path]:
    """`user:password` for Flower, generated once into a 0600 file that is never printed."""
    path = data_dir / AUTH_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"admin:{secrets.token_urlsafe(12)}\n")
    return path.read_text().strip(), path


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((LOOPBACK, port)) != 0


def start_local_flower(settings: Settings, *, log_dir: Path) -> tuple[ManagedProcess, str]:
    """Start Flower on loopback; return it and where its credentials are, for people to read.

    FLOWER_BASIC_AUTH wins when set; otherwise the generated file's pair is used.
    """
    if settings.flower_basic_auth:
        auth, where = settings.flower_basic_auth, "FLOWER_BASIC_AUTH"
    else:
        auth, path = flower_credentials(Path(settings.data_dir))
        where = str(path)
    fs = replace(settings, flower_basic_auth=auth, flower_address=LOOPBACK)
    # The configured port when free; a second stack on this machine takes another.
    port = settings.flower_port if _port_free(settings.flower_port) else free_port()
    return start_flower(fs, log_dir=log_dir, port=port), where
