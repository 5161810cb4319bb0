"""Installing the project prints no warning of ours: the metadata builds cleanly."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_string_and_the_backend_supports_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    requires = project["build-system"]["requires"]
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in requires), requires


def test_building_the_metadata_warns_about_nothing(tmp_path: Path) -> None:
    # A copy of what setuptools reads, so the build leaves nothing in the worktree.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("migrations", "orchestrator", "workers", "catalog_service"):
        (src / package).mkdir()
        (src / package / "__init__.py").write_text("")
    out = tmp_path / "meta"
    out.mkdir()
    # Offline: the venv's setuptools (the dev extra) is the backend; nothing is downloaded.
    code = (
        "import sys, setuptools.build_meta as b; "
        "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code, str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "deprecated" not in output.lower(), output[-2000:]
    assert "license" not in output.lower().replace("license-expression", ""), output[-2000:]
    metadata = (out / done.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata
