"""The engine is the bottom layer: it imports nothing of migrations/, orchestrator/, workers/."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "backfill_engine"
UPPER_LAYERS = ("migrations", "orchestrator", "workers")


def _imported(tree: ast.AST) -> list[str]:
    """Every module an `import` or `from ... import` names, at any depth (lazy ones too)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_no_engine_module_names_an_upper_layer() -> None:
    found = {
        f"{path.name}: {name}"
        for path in sorted(ENGINE.glob("*.py"))
        for name in _imported(ast.parse(path.read_text(), str(path)))
        if name.split(".")[0] in UPPER_LAYERS
    }
    assert not found, sorted(found)


def test_every_engine_module_imports_with_the_upper_layers_missing() -> None:
    # Run where the upper packages cannot be found, as in a team's environment that has
    # only the engine; importing every module (the public API first) must still work.
    modules = ["backfill_engine"] + [
        f"backfill_engine.{p.stem}" for p in sorted(ENGINE.glob("*.py")) if p.stem != "__init__"
    ]
    code = textwrap.dedent(
        f"""
        import importlib, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {UPPER_LAYERS!r}:
                    raise ImportError(f"blocked: {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        for name in {modules!r}:
            importlib.import_module(name)
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
