"""The engine is the bottom layer: it imports nothing above it (the migration framework,
the Celery glue, the orchestrator, our example scenario), and knows nothing of the example."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "backfill_engine"
UPPER_LAYERS = (
    "migrations",
    "orchestrator",
    "workers",
    "backfill_workers",
    "backfill_migrations",
    "catalog_service",
    "bench",
    "tests",
)
MODULES = sorted(ENGINE.rglob("*.py"))
# Words of the example scenario (its collection, its API, its fields). The schema keeps the
# first release's metadata names only to rename them (`product_id`, `planning.products`).
EXAMPLE_WORDS = re.compile(r"catalog|gtin|brand|product", re.IGNORECASE)
FIRST_RELEASE_NAMES = ("job_product_unique", "planning.products", "product_id")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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
        for path in MODULES
        for name in _imported(ast.parse(path.read_text(), str(path)))
        if name.split(".")[0] in UPPER_LAYERS
    }
    assert not found, sorted(found)


def test_every_engine_module_imports_with_the_upper_layers_missing() -> None:
    # Run where the upper packages cannot be found, as in a team's environment that has
    # only the engine; importing every module (the public API first) must still work.
    modules = ["backfill_engine"] + [_module_name(p) for p in MODULES]
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


def test_no_engine_module_knows_the_example_scenario() -> None:
    found = []
    for path in [*MODULES, *ENGINE.rglob("*.lua")]:
        for no, line in enumerate(path.read_text().splitlines(), 1):
            rest = line
            if path.name == "schema.py":
                for name in FIRST_RELEASE_NAMES:
                    rest = rest.replace(name, "")
            if EXAMPLE_WORDS.search(rest):
                found.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not found, found
