"""The shape of the package: imports run one way (no circle anywhere in ``src/torchnde``), the
core imports at module level only, and the loop package keeps its modules and functions short
enough to read (see ``docs/architecture.md``)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "torchnde"
# The core: the loop and everything it stands on, plus the gradient strategies and solve().
CORE = (
    "_solve.py",
    "_solution.py",
    "controllers.py",
    "terms.py",
    "events.py",
    "_loop",
    "gradients",
    "solvers",
)
LOOP_MODULE_LINES = 400
FUNCTION_LINES = 120


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports at module level."""
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        out.update(t for t in targets if t in known and t != module)
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _core_files() -> list[Path]:
    files: list[Path] = []
    for name in CORE:
        target = PACKAGE / name
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return files


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_package():
    known = _modules()
    graph = {m: _imports(m, p, known) for m, p in known.items()}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph) or [])}"


def test_imports_run_one_way_solve_gradients_loop():
    known = _modules()
    graph = {m: _imports(m, p, known) for m, p in known.items()}
    loop = [m for m in known if m.startswith("torchnde._loop")]
    for m in loop:
        bad = {t for t in graph[m] if t.startswith(("torchnde.gradients", "torchnde._solve"))}
        assert not bad, f"{m} imports {bad}: the loop must not import gradients or solve"
    for m in (m for m in known if m.startswith("torchnde.gradients")):
        assert "torchnde._solve" not in graph[m], f"{m} imports _solve: strategies run the loop package"


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_imports_at_module_level_only(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not inner, f"{path.name}:{inner[0].lineno} imports inside {node.name}()"


@pytest.mark.parametrize("path", sorted((PACKAGE / "_loop").glob("*.py")), ids=lambda p: p.name)
def test_loop_modules_and_functions_fit_on_a_screen(path):
    text = path.read_text()
    assert len(text.splitlines()) <= LOOP_MODULE_LINES, f"{path.name} has {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= FUNCTION_LINES, f"{path.name}: {node.name}() has {length} lines"


def test_importing_the_package_does_not_load_the_compiler():
    """``torch._dynamo`` (over a second to import, half of ``import torchnde``) is loaded only when
    something compiles (``solve(compile=True)``)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = "import sys, torchnde; print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'torch._inductor'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
