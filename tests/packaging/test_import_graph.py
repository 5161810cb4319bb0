"""No import circles among the project's modules, and each one imports on its own.

The graph is read with `ast`: an edge for every `import` run when a module loads (not
those inside functions, nor under `if TYPE_CHECKING:`). A lazy import inside a function
is allowed, but not one that only hides a circle: a module must not lazily import a
module that imports it back at load time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("backfill_engine", "orchestrator", "backfill_workers", "backfill_migrations")
ENGINE_MUST_NOT_IMPORT = ("orchestrator", "migrations", "backfill_workers")


def project_modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the four packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], *, lazy: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of `body` run at load time (`lazy`: only those inside functions)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if not lazy:
                yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if lazy:
                yield from (
                    n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))
                )
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _imports(node.orelse, lazy=lazy)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None) or []
                yield from _imports([n for n in inner if isinstance(n, ast.stmt)], lazy=lazy)
                for handler in (h for h in inner if isinstance(h, ast.ExceptHandler)):
                    yield from _imports(handler.body, lazy=lazy)


def _targets(
    name: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict[str, Path]
) -> set[str]:
    """The project modules one import statement loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    out = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    # `from pkg import sub` loads the submodule; any other name comes from pkg itself.
    if base in known and len(out) < len(node.names):
        out.add(base)
    return out


def import_graph(*, lazy: bool = False) -> dict[str, set[str]]:
    known = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        body = ast.parse(path.read_text(), str(path)).body
        graph[name] = set()
        for node in _imports(body, lazy=lazy):
            graph[name] |= _targets(name, path, node, known) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_cycle_finder_finds_a_circle_and_nothing_else() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []


def test_no_circle_among_project_modules_at_load_time() -> None:
    assert not cycles(import_graph()), cycles(import_graph())


def test_no_lazy_import_hides_a_circle() -> None:
    eager, lazy = import_graph(), import_graph(lazy=True)
    hidden = sorted(
        f"{a} lazily imports {b}, which imports {a} back"
        for a, targets in lazy.items()
        for b in targets
        if a in _reachable(eager, b)
    )
    assert not hidden, hidden


def test_the_engine_imports_no_upper_layer() -> None:
    eager, lazy = import_graph(), import_graph(lazy=True)
    both = {name: eager[name] | lazy[name] for name in eager if name.startswith("backfill_engine")}
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in both.items()
        for target in targets
        if target.split(".")[0] in ENGINE_MUST_NOT_IMPORT
    )
    assert not upward, upward
    # Names outside the four packages too (the example migrations live in `migrations`).
    named = sorted(
        f"{path.relative_to(ROOT)}: {node.module}"
        for name, path in project_modules().items()
        if name.startswith("backfill_engine")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and not node.level
        and (node.module or "").split(".")[0] in ENGINE_MUST_NOT_IMPORT
    )
    assert not named, named


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    # One interpreter holding only third-party libraries forks a child per module, so each
    # project module is the first one loaded, as when a process starts with it.
    modules = sorted(project_modules())
    code = textwrap.dedent(
        f"""
        import importlib, os, sys, traceback

        for lib in ("pymongo", "redis", "celery", "kombu", "click", "rich", "requests",
                    "prometheus_client", "bson"):
            try:
                importlib.import_module(lib)
            except ImportError:
                pass
        assert not [m for m in sys.modules if m.split(".")[0] in {PACKAGES!r}]
        failed = []
        for name in {modules!r}:
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(name)
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if status:
                failed.append(name)
        print("failed:", failed)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.stdout.strip() == "failed: []", done.stdout + done.stderr[-3000:]
