"""Every example in the public API's docstrings (the ```python blocks the API pages show) runs as
written, each on its own. The experiments' examples are left out: they start a quick tier, which
the experiment tests run anyway."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "torchnde"
_BLOCK = re.compile(r"```python\n(.*?)```", flags=re.S)


def _examples() -> list:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if "experiments" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                for i, code in enumerate(_BLOCK.findall(ast.get_docstring(node) or "")):
                    where = f"{path.relative_to(SRC).as_posix()}:{getattr(node, 'name', 'module')}:{i}"
                    found.append(pytest.param(code, id=where))
    return found


EXAMPLES = _examples()


def test_the_docstrings_have_examples_to_run():
    assert len(EXAMPLES) >= 50


@pytest.mark.parametrize("code", EXAMPLES)
def test_docstring_example_runs(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    exec(compile(code, "<docstring example>", "exec"), {"__name__": "__docstring__"})
